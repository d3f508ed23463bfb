"""``.env`` files and Java ``.properties``: flat keys, comments kept.

Both are lines of ``key=value`` with ``#`` comments (``.properties`` also
``!`` comments, ``key: value`` and ``key value``, and a value continued on
the next line by a final backslash; ``.env`` also ``export KEY=value``).
The document is a list of entries, each a key with its lines or a run of
comment and blank lines, so a merge rewrites only the lines of the keys it
sets, removes or adds, and a key added from theirs arrives with the comment
lines right above it there.  Values compare as written (quotes included):
``A="1"`` and ``A=1`` differ, as they may for the program that reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .plan import MISSING, ParseError

_ENV = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=(.*)$", re.S)
_PROP = re.compile(r"^\s*((?:\\.|[^\s:=\\])+)\s*(?:[:=]\s*|\s+|$)(.*)$", re.S)


class KvParseError(ParseError):
    pass


@dataclass
class Entry:
    key: str | None  # None: comment or blank lines
    lines: list[str]


class KvDoc:
    """A flat key document; ``kind`` is "env" or "properties"."""

    kind = "env"

    def __init__(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KvParseError(f"{self.kind} file is not UTF-8: {exc}") from None
        self.entries: list[Entry] = []
        self.plain: dict[str, Any] = {}
        lines = text.splitlines(keepends=True)
        i = 0
        while i < len(lines):
            ln = lines[i]
            s = ln.strip()
            if not s or s[0] in self._comment_chars():
                if self.entries and self.entries[-1].key is None:
                    self.entries[-1].lines.append(ln)
                else:
                    self.entries.append(Entry(None, [ln]))
                i += 1
                continue
            group = [ln]
            while self.kind == "properties" and _continued(group[-1]) and i + 1 < len(lines):
                i += 1
                group.append(lines[i])
            i += 1
            key, value = self._parse("".join(group))
            self.entries.append(Entry(key, group))
            self.plain[key] = value

    def _comment_chars(self) -> str:
        return "#!" if self.kind == "properties" else "#"

    def _parse(self, logical: str) -> tuple[str, str]:
        body = logical.rstrip("\r\n")
        m = (_ENV if self.kind == "env" else _PROP).match(body)
        if not m:
            raise KvParseError(f"{self.kind} file has a line that is not key=value: {body[:60]!r}")
        return m.group(1), m.group(2).strip() if self.kind == "env" else m.group(2)

    # -- the merge's operations ------------------------------------------------
    def _index(self, key: str) -> int:
        last = -1
        for i, e in enumerate(self.entries):
            if e.key == key:
                last = i
        return last

    def apply(self, op: Any, theirs: KvDoc) -> None:
        if len(op.path) != 1:
            raise ParseError(f"cannot apply {op.kind} below the top of a {self.kind} file")
        key = op.path[0]
        if op.kind == "set":
            self.entries[self._index(key)].lines = list(theirs.entries[theirs._index(key)].lines)
        elif op.kind == "del":
            self.entries = [e for e in self.entries if e.key != key]
        elif op.kind == "add":
            ti = theirs._index(key)
            new = [Entry(key, list(theirs.entries[ti].lines))]
            if ti > 0 and theirs.entries[ti - 1].key is None:
                lead = _comment_block(theirs.entries[ti - 1].lines)
                if lead:
                    new.insert(0, Entry(None, lead))
            if op.after is not MISSING and self._index(op.after) >= 0:
                pos = self._index(op.after) + 1
            elif op.before is not MISSING and self._index(op.before) >= 0:
                pos = self._index(op.before)
                while pos > 0 and self.entries[pos - 1].key is None and \
                        _comment_block(self.entries[pos - 1].lines) == self.entries[pos - 1].lines:
                    pos -= 1  # keep the next key's own comment block right above it
            else:
                pos = len(self.entries)
            if pos and not "".join(self.entries[pos - 1].lines).endswith("\n"):
                self.entries[pos - 1].lines[-1] += "\n"
            self.entries[pos:pos] = new
        else:
            raise ParseError(f"cannot apply {op.kind} in a {self.kind} file")

    def dump(self) -> bytes:
        return "".join(ln for e in self.entries for ln in e.lines).encode("utf-8")


class EnvDoc(KvDoc):
    kind = "env"


class PropertiesDoc(KvDoc):
    kind = "properties"


def _continued(line: str) -> bool:
    body = line.rstrip("\r\n")
    return (len(body) - len(body.rstrip("\\"))) % 2 == 1


def _comment_block(lines: list[str]) -> list[str]:
    """The comment lines right above a key: those after the last blank line."""
    out: list[str] = []
    for ln in reversed(lines):
        if not ln.strip():
            break
        out.insert(0, ln)
    return out
