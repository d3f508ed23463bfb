"""Validation against the Compose Specification's JSON schema.

``compose-spec.json`` beside this module is the specification's own schema
(schema/compose-spec.json of the compose-spec/compose-spec repository,
commit 170098ba07d9, 2026-06-23), shipped unchanged under the Apache License
2.0 (``compose-spec.LICENSE.txt``; "The Compose Specification, Copyright
2020 The Compose Specification Authors").  fastjsonschema compiles it on
first use (imported lazily: no other command pays for it).  The first
violation becomes one error naming the file, the line and the key.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from volmerge.errors import BadInput

from .yamlsrc import Positions, dotted


@cache
def _schema() -> dict[str, Any]:
    import json
    from importlib import resources

    text = resources.files(__package__).joinpath("compose-spec.json").read_text("utf-8")
    return dict(json.loads(text))


@cache
def _validator() -> Any:
    import fastjsonschema

    return fastjsonschema.compile(_schema())


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(data: dict[str, Any], pos: Positions) -> None:
    """Raise BadInput for the first place ``data`` breaks the schema."""
    import fastjsonschema

    try:
        _validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = _real_path(data, (exc.path or [])[1:])
        msg, path = _explain(exc, path)
        raise BadInput(f"{pos.where(path)}: {msg}") from None


def _real_path(data: Any, raw: list[Any]) -> tuple[Any, ...]:
    """fastjsonschema's path with list indexes as ints (it gives them as strings)."""
    out: list[Any] = []
    node = data
    for p in raw:
        if isinstance(node, list) and str(p).isdigit():
            p = int(p)
        out.append(p)
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def _explain(exc: Any, path: tuple[Any, ...], depth: int = 0) -> tuple[str, tuple[Any, ...]]:
    """A message naming the key; a failed ``oneOf`` is explained by the
    alternative of the value's own type (``ports[0]`` as a mapping: which of
    its keys is wrong)."""
    import fastjsonschema

    msg = str(exc.message)
    extra = re.search(r"must not contain \{'([^']+)'", msg)
    if extra is not None:
        path = (*path, extra.group(1))
        return f"{dotted(path)}: unknown key (not in the Compose Specification)", path
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    if depth < 3 and ("oneOf" in definition or "anyOf" in definition):
        for branch in definition.get("oneOf") or definition.get("anyOf") or []:
            branch = _deref(branch)
            want = branch.get("type")
            wants = want if isinstance(want, list) else [want]
            if not any(isinstance(exc.value, _TYPES.get(str(w), ())) for w in wants):
                continue
            full = _schema()
            schema = {"$schema": full.get("$schema"), "$id": full.get("$id"),
                      "definitions": {**full["definitions"], "_branch": branch},
                      "$ref": "#/definitions/_branch"}
            try:
                fastjsonschema.compile(schema)(exc.value)
            except fastjsonschema.JsonSchemaValueException as inner:
                sub = _real_path(exc.value, (inner.path or [])[1:])
                return _explain(inner, (*path, *sub), depth + 1)
    rest = re.sub(r"^data(\.[^ ]*|\[[^ ]*)* ", "", msg)
    rest = rest.replace("must be valid exactly by one definition (0 matches found)",
                        "is in none of the forms the specification allows")
    return f"{dotted(path)}: {rest}", path


def _deref(branch: dict[str, Any]) -> dict[str, Any]:
    ref = branch.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        return dict(_schema()["definitions"][ref[len("#/definitions/"):]])
    return branch
