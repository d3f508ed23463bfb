"""The only row statement a dump may carry: ``INSERT … VALUES`` of literals.

A dump is data.  Its rows are staged by SQLite's own parser (fast), but
SQLite would run whatever an ``INSERT`` holds: ``INSERT INTO t WITH
RECURSIVE …`` (one such line produced 3M rows), ``INSERT … SELECT`` from
anything, ``randomblob(1e9)``.  So every ``INSERT`` is checked first: its
head (``INSERT [OR …] INTO name [(columns)]``), then its body, which must
be ``VALUES`` tuples of literals — strings, numbers, blobs, NULL, TRUE,
FALSE, DEFAULT, a sign, and the few forms dumps write for characters a
literal cannot hold: ``char(10)``, ``'a'||char(10)``, sqlite3's
``replace('a\\nb','\\n',char(10))`` (its output is never longer than its
input) and ``unistr('…')``; PostgreSQL's ``B''`` and ``::type`` casts and
MySQL's ``_binary''`` introducers.  One compiled regular expression
accepts the common case (a typical line costs one match); only lines it
refuses go through the small parser below.  Anything else is refused with
the statement's line.  The staging connection also gets an authorizer
(:func:`authorize`) that lets nothing but inserts and those functions
through, should a statement slip past.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from volmerge.strategies.errors import BadInput

#: one identifier: "quoted" (doubled quotes), `quoted`, [bracketed] or bare
IDENT = r'(?:"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|[^\s."`\[\](),;\'|]+)'
QNAME = rf"{IDENT}(?:\s*\.\s*{IDENT})*"
_HEAD = re.compile(rf"\s*((?:INSERT|REPLACE)\s+(?:OR\s+[A-Za-z]+\s+)?INTO)\s+({QNAME})"
                   rf"(\s*\(\s*{IDENT}(?:\s*,\s*{IDENT})*\s*\))?\s*", re.I)
_PART = re.compile(IDENT)

_LIT = (r"(?>'[^']*+(?:''[^']*+)*+'|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
        r"|NULL|TRUE|FALSE|[xX]'[0-9A-Fa-f]*')")
_TUPLE = rf"\(\s*+(?:{_LIT}(?:\s*+,\s*+{_LIT})*+)?\s*+\)"
_FAST = re.compile(rf"VALUES\s*+{_TUPLE}(?:\s*+,\s*+{_TUPLE})*+\s*+", re.I)

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>(?:[nNbBxX]|_[A-Za-z0-9]+\s*)?'[^']*(?:''[^']*)*')
  | (?P<num>0[xX][0-9A-Fa-f]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\|\||::|-(?!-)|[(),+\[\]])
""", re.X | re.S)
# No comments (``--`` is not two signs) and no E'' strings: every token ends
# where SQLite's tokenizer ends it, so what SQLite runs is what was checked.

_CONSTANTS = {"NULL", "TRUE", "FALSE", "DEFAULT"}
#: functions a dump's values may call (sqlite3's .dump writes them); the
#: authorizer allows these and no other
FUNCTIONS = frozenset({"char", "replace", "unistr"})


@dataclass
class Insert:
    """A checked INSERT: its verb (``INSERT INTO``, ``INSERT OR REPLACE INTO``),
    the table's name (unquoted, schema dropped), the column list as written
    (or ""), and the VALUES body as written."""

    verb: str
    table: str
    columns: str
    body: str


def unquote(part: str) -> str:
    if part[:1] == '"':
        return part[1:-1].replace('""', '"')
    if part[:1] == "`":
        return part[1:-1].replace("``", "`")
    if part[:1] == "[":
        return part[1:-1]
    return part


def head(text: str) -> tuple[re.Match[str], str] | None:
    """The INSERT head of ``text`` and its table (last part of the name, unquoted)."""
    m = _HEAD.match(text)
    if m is None:
        return None
    return m, unquote(_PART.findall(m.group(2))[-1])


def check(text: str, line: int) -> Insert:
    """``text`` as an :class:`Insert`, or BadInput naming ``line``."""
    found = head(text)
    if found is not None:
        m, table = found
        body = text[m.end():]
        if _FAST.fullmatch(body) or _values_ok(body):
            return Insert(m.group(1), table, m.group(3) or "", body)
    what = " ".join(text.split())[:60]
    if found is not None and re.match(r"(?:OVERRIDING\s+\w+\s+VALUE\s+)?VALUES\b", body, re.I):
        raise BadInput(f"malformed dump: line {line}: {what}: the values are not literals")
    raise BadInput(f"unsupported statement at line {line}: {what} (a dump's rows must be "
                   f"INSERT ... VALUES of literal values)")


class _Refused(Exception):
    pass


class _Parser:
    """Recursive descent over the tokens of a VALUES body; refuses (by
    :class:`_Refused`) anything that is not a literal value."""

    def __init__(self, body: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(body):
            m = _TOKEN.match(body, pos)
            if m is None:
                raise _Refused
            pos = m.end()
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup or "", m.group(0)))
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        if (value is not None and v.upper() != value.upper()) or (kind is not None and k != kind) \
                or k == "end":
            raise _Refused
        self.i += 1
        return v

    def at(self, value: str) -> bool:
        return self.peek()[1].upper() == value.upper()

    def body(self) -> None:
        if self.at("OVERRIDING"):  # pg_dump --inserts for GENERATED ALWAYS identities
            self.take("OVERRIDING")
            if not (self.at("SYSTEM") or self.at("USER")):
                raise _Refused
            self.i += 1
            self.take("VALUE")
        self.take("VALUES")
        self.tuple_()
        while self.at(","):
            self.take(",")
            self.tuple_()
        if self.peek()[0] != "end":
            raise _Refused

    def tuple_(self) -> None:
        self.take("(")
        if not self.at(")"):
            self.expr()
            while self.at(","):
                self.take(",")
                self.expr()
        self.take(")")

    def expr(self) -> None:
        self.unary()
        while self.at("||"):
            self.take("||")
            self.unary()

    def unary(self) -> None:
        while self.at("-") or self.at("+"):
            self.i += 1
        self.primary()
        while self.at("::"):
            self.take("::")
            self.type_()

    def type_(self) -> None:
        self.take(kind="word")
        while self.peek()[0] == "word":
            self.i += 1
        if self.at("("):
            self.take("(")
            self.take(kind="num")
            if self.at(","):
                self.take(",")
                self.take(kind="num")
            self.take(")")
        while self.at("["):
            self.take("[")
            self.take("]")

    def primary(self) -> None:
        k, v = self.peek()
        if k in ("str", "num"):
            self.i += 1
        elif k == "word" and v.upper() in _CONSTANTS:
            self.i += 1
        elif k == "word" and v.lower() == "char":
            self.char()
        elif k == "word" and v.lower() == "unistr":
            self.i += 1
            self.take("(")
            self.take(kind="str")
            self.take(")")
        elif k == "word" and v.lower() == "replace":
            # sqlite3's .dump: replace(text, marker, char(N)); one character
            # for a marker of at least one: never longer than its input
            self.i += 1
            self.take("(")
            self.expr()
            self.take(",")
            marker = self.take(kind="str")
            if marker in ("''", ) or not marker.startswith("'"):
                raise _Refused
            self.take(",")
            if self.char() != 1:
                raise _Refused
            self.take(")")
        elif v == "(":
            self.take("(")
            self.expr()
            self.take(")")
        else:
            raise _Refused

    def char(self) -> int:
        self.take("char")
        self.take("(")
        n = 1
        self.take(kind="num")
        while self.at(","):
            self.take(",")
            self.take(kind="num")
            n += 1
        self.take(")")
        return n


def _values_ok(body: str) -> bool:
    try:
        _Parser(body).body()
    except (_Refused, RecursionError):
        return False
    return True


# sqlite3 authorizer action codes (sqlite3.SQLITE_* where the module has them)
_ALLOWED = {getattr(sqlite3, n) for n in ("SQLITE_INSERT", "SQLITE_SELECT", "SQLITE_TRANSACTION",
                                          "SQLITE_CREATE_TABLE")}
_SCHEMA_ONLY = {getattr(sqlite3, n) for n in ("SQLITE_READ", "SQLITE_UPDATE")}


def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None,
              _trigger: str | None) -> int:
    """sqlite3 authorizer of a staging connection: inserts (a multi-row
    VALUES counts as a SELECT), creating the staging tables (which touches
    sqlite_master), transactions and the FUNCTIONS; nothing else."""
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action in _SCHEMA_ONLY and arg1 in ("sqlite_master", "sqlite_schema"):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def literal_rows(ins: Insert, line: int) -> list[tuple[object, ...]]:
    """The rows of a checked INSERT, evaluated by SQLite (the literal forms
    above), for the few INSERTs read as settings (``sqlite_sequence``)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.set_authorizer(authorize)
        return conn.execute(ins.body).fetchall()
    except sqlite3.Error as e:
        raise BadInput(f"malformed dump: line {line}: {e}") from None
    finally:
        conn.close()
