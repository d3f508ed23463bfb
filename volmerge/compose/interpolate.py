"""Variable interpolation as the Compose Specification defines it (12-interpolation.md).

``$VAR`` and ``${VAR}``; ``${VAR:-default}`` (unset or empty) and
``${VAR-default}`` (unset); ``${VAR:?err}`` / ``${VAR?err}`` (an error
naming ``err``); ``${VAR:+alt}`` / ``${VAR+alt}`` (``alt`` when set);
defaults and messages may nest further substitutions; ``$$`` is a literal
``$``.  A ``$`` that starts no valid reference is kept as it is.  An unset
variable without a default becomes the empty string and a warning, as
docker compose does.  Values only: keys are never interpolated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from volmerge.errors import BadInput

from .yamlsrc import Override, dotted

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")


class InterpolationError(BadInput):
    """A ``${VAR:?err}`` whose variable is missing, or a malformed ``${...}``."""


def interpolate(text: str, env: Mapping[str, str],
                warn: Callable[[str], None] | None = None) -> str:
    """``text`` with every reference substituted from ``env``."""
    return _parse(text, 0, env, warn, stop=None)[0]


def interpolate_tree(data: Any, env: Mapping[str, str], where: Callable[[tuple[Any, ...]], str],
                     warn: Callable[[str], None] | None = None,
                     path: tuple[Any, ...] = ()) -> Any:
    """Every string value of a plain tree interpolated (keys untouched);
    errors name the place (``where(path)``) and the key."""
    if isinstance(data, dict):
        return {k: interpolate_tree(v, env, where, warn, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_tree(v, env, where, warn, (*path, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        try:
            return interpolate(data, env, warn)
        except InterpolationError as exc:
            raise InterpolationError(f"{where(path)}: {dotted(path)}: {exc.message}") from None
    if isinstance(data, Override):
        return Override(interpolate_tree(data.value, env, where, warn, path))
    return data


def _parse(s: str, i: int, env: Mapping[str, str], warn: Callable[[str], None] | None,
           stop: str | None) -> tuple[str, int]:
    """Substitute from ``i`` until ``stop`` (a closing brace of an enclosing
    reference) or the end; the text and the index after it."""
    out: list[str] = []
    n = len(s)
    while i < n:
        ch = s[i]
        if stop is not None and ch == stop:
            return "".join(out), i
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = s[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            value, i = _braced(s, i + 2, env, warn)
            out.append(value)
        else:
            m = _NAME.match(s, i + 1)
            if m is None:
                out.append("$")
                i += 1
            else:
                out.append(_lookup(m.group(0), env, warn))
                i = m.end()
    if stop is not None:
        raise InterpolationError(f"invalid interpolation format in {s!r}: missing '}}'")
    return "".join(out), i


def _braced(s: str, i: int, env: Mapping[str, str],
            warn: Callable[[str], None] | None) -> tuple[str, int]:
    """``${`` seen, ``i`` after it: the substitution and the index after ``}``."""
    m = _NAME.match(s, i)
    if m is None:
        raise InterpolationError(f"invalid interpolation format in {s!r}: "
                                 f"a variable name is expected after '${{'")
    name, i = m.group(0), m.end()
    if i < len(s) and s[i] == "}":
        return _lookup(name, env, warn), i + 1
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if s.startswith(op, i):
            break
    else:
        raise InterpolationError(f"invalid interpolation format in {s!r}: "
                                 f"unexpected {s[i:i + 1]!r} after ${{{name}")
    arg, j = _parse(s, i + len(op), env, warn, stop="}")
    value = env.get(name)
    if value == "" and op.startswith(":"):
        value = None  # the ":" forms count an empty value as unset
    kind = op[-1]
    if kind == "-":
        return (value if value is not None else arg), j + 1
    if kind == "+":
        return (arg if value is not None else ""), j + 1
    if value is None:  # "?"
        raise InterpolationError(f"required variable {name} is missing a value: {arg}"
                                 if arg else f"required variable {name} is missing a value")
    return value, j + 1


def _lookup(name: str, env: Mapping[str, str], warn: Callable[[str], None] | None) -> str:
    value = env.get(name)
    if value is None:
        if warn is not None:
            warn(f"the {name!r} variable is not set: defaulting to a blank string")
        return ""
    return value
