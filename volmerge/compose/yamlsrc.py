"""A compose file read into plain data, with the line of every key kept.

ruamel.yaml (round-trip mode) knows where each key and item came from;
the rest of the loader works on plain dicts and lists, so the lines are
copied into a :class:`Positions` map (path -> line) while converting, and
an error about ``services.web.ports[0]`` can name ``compose.yaml:12``.
The Compose Specification's merge tags ``!reset`` and ``!override``
(13-merge.md) become :class:`Reset` / :class:`Override` markers that the
merge consumes.  Aliases are expanded while converting, with a bound on
the number of nodes, so an alias bomb is refused instead of filling memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from volmerge.errors import BadInput

MAX_NODES = 200_000
Path = tuple[Any, ...]


@dataclass(frozen=True)
class Reset:
    """``!reset``: the key is removed from what the earlier files said."""


@dataclass(frozen=True)
class Override:
    """``!override VALUE``: VALUE replaces, bypassing the merge rules."""

    value: Any


@dataclass
class Positions:
    """Where each path of one file's data was written (1-based lines)."""

    file: str
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest parent that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def where(self, path: Path) -> str:
        line = self.line(path)
        return f"{self.file}:{line}" if line else self.file


def dotted(path: Path) -> str:
    """``services.web.ports[0]``: the key path as an operator writes it."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def load_text(text: str, file: str) -> tuple[Any, Positions]:
    """Plain data and positions of one YAML document."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    y = YAML(typ="rt")
    try:
        docs = list(y.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{file}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except (YAMLError, ValueError) as exc:
        raise BadInput(f"{file}: invalid YAML: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None
    if len(docs) > 1:
        raise BadInput(f"{file}: a compose file holds one YAML document, not {len(docs)}")
    pos = Positions(file)
    budget = [MAX_NODES]
    data = _plain(docs[0] if docs else None, (), pos, budget, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInput(f"{file}: the top level must be a mapping")
    return data, pos


def load_file(path: str) -> tuple[Any, Positions]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    return load_text(text, path)


def _plain(node: Any, path: Path, pos: Positions, budget: list[int], file: str) -> Any:
    from ruamel.yaml.comments import TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise BadInput(f"{file}: more than {MAX_NODES} YAML nodes (aliases expanded): refused")
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag in ("!reset", "!override"):
        if tag == "!reset":
            return Reset()
        inner = node.value if isinstance(node, TaggedScalar) else _untagged(node, path, pos,
                                                                           budget, file)
        return Override(inner)
    if isinstance(node, TaggedScalar):
        raise BadInput(f"{pos.where(path)}: {dotted(path)}: unknown YAML tag {tag}")
    return _untagged(node, path, pos, budget, file)


def _untagged(node: Any, path: Path, pos: Positions, budget: list[int], file: str) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for k, v in node.items():
            key = k if isinstance(k, str) else str(k) if isinstance(k, int | float) else None
            if key is None:
                raise BadInput(f"{pos.where(path)}: {dotted(path)}: a key must be a string")
            try:
                pos.lines[(*path, key)] = node.lc.key(k)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            out[key] = _plain(v, (*path, key), pos, budget, file)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, v in enumerate(node):
            try:
                pos.lines[(*path, i)] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            items.append(_plain(v, (*path, i), pos, budget, file))
        return items
    if isinstance(node, bool | int | float) or node is None:
        return node
    if isinstance(node, str):
        return str(node)
    return str(node)  # dates and other scalars: their text
