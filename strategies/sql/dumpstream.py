"""Streaming reader of plain SQL dump files.

A dump can be far larger than memory, so it is never read whole: lines are
pulled one at a time and a small state machine (quotes, comments, PostgreSQL
dollar quotes, trigger bodies) decides where each statement ends.  Only the
statement being assembled is held in memory.  ``COPY ... FROM stdin`` data
blocks (pg_dump's plain format) are handed out as a lazy iterator of raw data
lines, so one multi-gigabyte COPY block costs one line of memory.

Speed: the scanner jumps between interesting characters with compiled
regular expressions (C speed); a typical ``INSERT`` line costs three regex
calls.  sqlglot is never called here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from volmerge.strategies.errors import BadInput

MAX_STATEMENT = 256 * 1024 * 1024  # one statement larger than this is not a dump we accept

_COPY_RE = re.compile(r"^\s*COPY\s+.+\s+FROM\s+stdin\b", re.I | re.S)
_TRIGGER_RE = re.compile(r"^\s*CREATE\s+(?:TEMP\w*\s+)?TRIGGER\b", re.I)
_END_RE = re.compile(r"\bEND\s*$", re.I)
_CASE_RE = re.compile(r"\b(CASE|END)\b", re.I)


@dataclass
class Statement:
    """One statement: its text (without the final ';'), the 1-based line it
    starts on, and for COPY ... FROM stdin the lazy iterator of data lines
    (each without its newline); the iterator must be consumed or abandoned
    before the next statement is requested (it is drained automatically)."""

    text: str
    line: int
    copy_lines: Iterator[str] | None = None

    @property
    def head(self) -> str:
        """The first words, for messages ("unsupported statement CREATE FUNCTION at line 7")."""
        words = self.text.split(None, 4)[:3]
        return " ".join(words)[:60]


def sniff_dialect(sample: str) -> str:
    """Guess a dump's dialect from its first kilobytes."""
    if "PostgreSQL database dump" in sample or re.search(r"^COPY .* FROM stdin;", sample, re.M):
        return "postgres"
    if "MySQL dump" in sample or "mysqldump" in sample or "/*!40" in sample or "MariaDB dump" in sample:
        return "mysql"
    return "sqlite"


def open_text(path: str) -> IO[str]:
    return open(path, encoding="utf-8", errors="surrogateescape", newline="\n")


def iter_statements(f: IO[str], dialect: str = "sqlite") -> Iterator[Statement]:
    """Yield the statements of a dump read from ``f`` one by one.

    Raises BadInput naming the line where an unterminated string, comment or
    COPY block started.
    """
    backslash = dialect == "mysql"
    sq = re.compile(r"\\.|'", re.S) if backslash else re.compile(r"'")
    dq = re.compile(r'\\.|"', re.S) if backslash else re.compile(r'"')
    bq = re.compile(r"`")
    pattern = r"['\"`;]|--|/\*"
    if dialect == "postgres":
        pattern += r"|\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$"
    if dialect == "mysql":
        pattern += r"|#"
    normal = re.compile(pattern)
    parts: list[str] = []
    size = 0
    start_line = 0
    lineno = 0
    state: str | None = None  # None, "'", '"', '`', "/*", or a dollar tag like "$fn$"
    state_line = 0
    it = iter(f)

    def copy_block(first_line: int) -> Iterator[str]:
        nonlocal lineno
        for raw in it:
            lineno += 1
            line = raw[:-1] if raw.endswith("\n") else raw
            if line == "\\.":
                return
            yield line
        raise BadInput(f"malformed dump: COPY block starting at line {first_line} "
                       f"has no terminating \\. line")

    def add(piece: str) -> None:
        nonlocal start_line, size
        if piece:
            if start_line == 0 and not piece.isspace():
                start_line = lineno
            parts.append(piece)
            size += len(piece)

    for line in it:
        lineno += 1
        if state is None and start_line == 0 and line.startswith("\\") and dialect == "postgres":
            continue  # a psql meta-command (pg_dump's \\connect, \\restrict)
        if state is None and start_line == 0 and line.startswith(".") and dialect == "sqlite":
            # the sqlite3 shell would run it (.system, .shell, .load): a dump is data
            raise BadInput(f"unsupported statement at line {lineno}: sqlite3 shell command "
                           f"{line.split()[0][:40]}")
        pos = 0
        n = len(line)
        while pos < n:
            if state is None:
                m = normal.search(line, pos)
                if m is None:
                    add(line[pos:])
                    break
                tok = m.group(0)
                if tok == ";":
                    add(line[pos:m.start()])
                    pos = m.end()
                    text = "".join(parts).strip()
                    if text and _TRIGGER_RE.match(text) and not _trigger_complete(text):
                        add(";")
                        continue
                    first = start_line
                    parts.clear()
                    size = 0
                    start_line = 0
                    if not text:
                        continue
                    if _COPY_RE.match(text):
                        block = copy_block(lineno + 1)
                        yield Statement(text, first, block)
                        for _ in block:  # drain what the consumer left
                            pass
                        break  # the rest of a COPY line is ignored
                    yield Statement(text, first)
                    continue
                if tok in ("--", "#"):
                    add(line[pos:m.start()])
                    add("\n")
                    break
                if tok == "/*":
                    add(line[pos:m.start()])
                    end = line.find("*/", m.end())
                    add(" ")
                    if end >= 0:
                        pos = end + 2
                        continue
                    state, state_line = "/*", lineno
                    break
                add(line[pos:m.end()])  # a quote or a dollar tag opens
                state, state_line = tok, lineno
                pos = m.end()
            elif state == "/*":
                end = line.find("*/", pos)
                if end < 0:
                    break
                state = None
                pos = end + 2
            elif state.startswith("$"):
                end = line.find(state, pos)
                if end < 0:
                    add(line[pos:])
                    break
                add(line[pos:end + len(state)])
                pos = end + len(state)
                state = None
            else:
                rx = sq if state == "'" else dq if state == '"' else bq
                m = rx.search(line, pos)
                while m is not None and len(m.group(0)) == 2:  # backslash escape
                    m = rx.search(line, m.end())
                if m is None:
                    add(line[pos:])
                    break
                add(line[pos:m.end()])
                pos = m.end()
                state = None
        if size > MAX_STATEMENT:
            raise BadInput(f"malformed dump: statement starting at line {start_line} is larger than "
                           f"{MAX_STATEMENT // (1024 * 1024)} MB (missing ';'?)")
    if state is not None:
        what = "comment" if state == "/*" else f"quoted string ({state})"
        raise BadInput(f"malformed dump: unterminated {what} starting at line {state_line}")
    text = "".join(parts).strip()
    if text:
        raise BadInput(f"malformed dump: statement at line {start_line} has no terminating ';': "
                       f"{text[:40]!r}")


def _first_content_line(text: str, lineno: int) -> int:
    """The line (in the file) of the first non-blank character of ``text``,
    which ends on line ``lineno``."""
    lead = len(text) - len(text.lstrip())
    return lineno - text.count("\n", lead)


def _trigger_complete(text: str) -> bool:
    """A CREATE TRIGGER ... BEGIN ... END statement ends at the ';' after its
    END (sqlite3_complete does the same); CASE ... END inside does not count."""
    if not _END_RE.search(text):
        return False
    depth = 0
    for m in _CASE_RE.finditer(text):
        if m.group(1).upper() == "CASE":
            depth += 1
        else:
            depth -= 1
    return depth < 0


def statements_of(text: str, dialect: str = "sqlite") -> list[Statement]:
    """All statements of a small SQL text (schema files, tests)."""
    return list(iter_statements(io.StringIO(text), dialect))
