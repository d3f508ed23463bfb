"""Identifiers and literals into SQL text: one helper per dialect.

Names and values come from the databases being replayed, and a source
database may be hostile: a table called ``x'); DROP TABLE y; --`` or one
whose name holds a newline and ``.system id``.  Everything a database hands
us goes into SQL text through these functions, never through a bare
f-string, so that a dump is data whatever the names (see docs/sql.md,
"Dumps are data").

SQLite dumps are fed to the ``sqlite3`` shell, which reads them line by
line: a line that starts with ``.`` is a shell command when no statement is
pending, and a line holding only ``/`` or ``go`` ends the pending statement
early.  So :func:`sqlite_literal` never puts a raw newline into a dump
(``'a'||char(10)||'b'``), and :func:`shell_safe` neutralises terminator
lines in the statement texts SQLite stored (a view or trigger body).

PostgreSQL literals are written so that they mean the same with
``standard_conforming_strings`` on or off (``E''`` as soon as a backslash is
in the text), which also keeps psql's own lexer in step: it must know
where a literal ends to tell a backslash command from text.
"""

from __future__ import annotations

import re
import sqlite3

from volmerge.strategies.errors import BadInput

_SPECIAL = re.compile(r"[\n\r\x00]+")


def _no_nul(name: str, what: str) -> None:
    if "\x00" in name:
        raise BadInput(f"{what} {name!r} contains a NUL character, which SQL text cannot hold")


def ident(name: str) -> str:
    """A quoted identifier for SQLite and PostgreSQL alike: ``"`` doubled.
    A NUL cannot be written (SQLite ends the statement there, PostgreSQL
    refuses it): BadInput."""
    _no_nul(name, "identifier")
    return '"' + name.replace('"', '""') + '"'


sqlite_ident = ident
pg_ident = ident


def sqlite_text(s: str) -> str:
    """A SQLite text literal with no raw newline, CR or NUL in it: those
    characters become ``char(...)`` joined by ``||`` (a NUL kept, where
    ``quote()`` and the sqlite3 shell's .dump cut the text)."""
    if not _SPECIAL.search(s):
        return "'" + s.replace("'", "''") + "'"
    parts: list[str] = []
    pos = 0
    for m in _SPECIAL.finditer(s):
        if m.start() > pos:
            parts.append("'" + s[pos:m.start()].replace("'", "''") + "'")
        parts.append("char(" + ",".join(str(ord(c)) for c in m.group(0)) + ")")
        pos = m.end()
    if pos < len(s):
        parts.append("'" + s[pos:].replace("'", "''") + "'")
    return "||".join(parts)


def sqlite_literal(v: object) -> str:
    """Any value SQLite stores -> a literal that reads back as the same value."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "NULL"  # SQLite stores NaN as NULL
        if v in (float("inf"), float("-inf")):
            return "9e999" if v > 0 else "-9e999"
        return repr(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "X'" + bytes(v).hex().upper() + "'"
    return sqlite_text(str(v))


def pg_literal(s: str) -> str:
    """A PostgreSQL string literal that means the same whatever
    ``standard_conforming_strings`` says.  NUL: BadInput (text cannot hold it)."""
    _no_nul(s, "text")
    body = s.replace("'", "''")
    if "\\" in s:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def pg_regclass(name: str) -> str:
    """The literal naming table ``name`` where PostgreSQL wants a regclass
    text (``setval``, ``pg_get_serial_sequence``): the quoted identifier,
    quoted again as a literal (``quote_literal(quote_ident(name))``)."""
    return pg_literal(pg_ident(name))


# What the sqlite3 shell looks at, line by line: quotes, bracketed names and
# comments, in which a line start is not a line start for it.
_SHELL_TOKEN = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^']|'')*(?:'|\Z)"
                          r"|\"(?:[^\"]|\"\")*(?:\"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z)"
                          r"|\n", re.S)
_TERMINATOR = re.compile(r"[ \t\v\f\r]*(?:/|[gG][oO])")


def shell_safe(text: str) -> str:
    """``text`` (one statement SQLite stored, without its ';') as the
    sqlite3 shell must see it in a dump: a line outside quotes and comments
    that starts with ``/`` or ``go`` would end the statement early (and let
    the next line be a shell command such as ``.system``); it gets a
    ``/**/`` in front, which SQL reads as a space.  Raises BadInput if
    ``text`` is not one statement (complete before its end) or starts with
    something the shell would read as a command."""
    if not re.match(r"\s*[A-Za-z]", text):
        raise BadInput(f"statement does not start with a keyword: {text[:40]!r}")
    if "\n" not in text:
        return text
    out: list[str] = []
    pos = 0
    for m in _SHELL_TOKEN.finditer(text):
        if m.group(0) != "\n":
            continue
        end = m.end()
        if sqlite3.complete_statement(text[:end]):
            raise BadInput(f"statement text holds more than one statement: {text[:40]!r}")
        if _TERMINATOR.match(text, end):
            out.append(text[pos:end])
            out.append("/**/")
            pos = end
    out.append(text[pos:])
    return "".join(out)
