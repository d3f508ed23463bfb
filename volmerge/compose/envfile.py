"""``.env`` and ``env_file`` files as docker compose reads them.

``KEY=VALUE`` lines; ``export KEY=VALUE``; blank lines and ``#`` comments;
an unquoted value ends before `` #``; ``'single'`` quotes keep the text as
it is, ``"double"`` quotes understand ``\\n``, ``\\t``, ``\\"`` and ``\\\\``;
a bare ``KEY`` takes the caller's value (or is left out).  The project's
``.env`` only feeds interpolation; a service's ``env_file`` becomes its
environment, below ``environment``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from volmerge.errors import BadInput

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse(text: str, file: str, lookup: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of one file, in order."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise BadInput(f"{file}:{n}: bad variable {raw.strip()!r}: expected KEY=VALUE")
        if not sep:
            value = (lookup if lookup is not None else os.environ).get(key)
            if value is not None:
                out[key] = value
            continue
        out[key] = _value(rest.strip(), file, n)
    return out


def _value(v: str, file: str, n: int) -> str:
    if v[:1] == "'":
        end = v.find("'", 1)
        if end < 0:
            raise BadInput(f"{file}:{n}: unterminated single-quoted value")
        return v[1:end]
    if v[:1] == '"':
        out, i = [], 1
        while i < len(v):
            ch = v[i]
            if ch == "\\" and i + 1 < len(v):
                out.append(_ESCAPES.get(v[i + 1], "\\" + v[i + 1]))
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        raise BadInput(f"{file}:{n}: unterminated double-quoted value")
    hash_at = v.find(" #")
    return (v[:hash_at] if hash_at >= 0 else v).rstrip()


def read(path: str, lookup: Mapping[str, str] | None = None) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"env file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text, path, lookup)
