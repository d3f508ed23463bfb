"""One schema model for SQLite files, PostgreSQL databases and .sql files.

A schema is data (tables, columns, keys, indexes, views, triggers,
sequences) so that the three-way diff and the replay work the same whatever
the database is.  Each object keeps its original SQL text and dialect:
replaying into the same dialect reuses that text verbatim (nothing is lost in
translation); another dialect gets DDL rendered from the model, with types,
defaults and expressions transpiled by sqlglot.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .quote import ident as _ident

DIALECTS = ("sqlite", "postgres", "mysql")

# Migration bookkeeping tables: the new version's rows win, old rows are not replayed.
BOOKKEEPING = ("alembic_version", "django_migrations", "flyway_schema_history",
               "schema_migrations", "knex_migrations", "knex_migrations_lock", "ar_internal_metadata")


def family(type_: str) -> str:
    """The value family of a declared type (SQLite affinity rules, refined):
    integer, real, numeric, boolean, text, blob, date, time, timestamp."""
    t = (type_ or "").upper()
    if "BOOL" in t:
        return "boolean"
    if "INT" in t or "SERIAL" in t:
        return "integer"
    if "TIMESTAMP" in t or "DATETIME" in t:
        return "timestamp"
    if t.startswith("DATE"):
        return "date"
    if t.startswith("TIME") or t.startswith("INTERVAL"):
        return "time" if t.startswith("TIME") else "text"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT", "UUID", "JSON", "XML", "ENUM", "CITEXT")):
        return "text"
    if "BLOB" in t or "BYTEA" in t or "BINARY" in t or t == "":
        return "blob" if t else "any"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


@dataclass
class Column:
    name: str
    type: str = ""
    notnull: bool = False
    default: str | None = None  # SQL expression text in the schema's dialect
    pk: int = 0  # 1-based position in the primary key, 0 when not part of it
    autoincrement: bool = False  # AUTOINCREMENT, identity, serial, AUTO_INCREMENT

    @property
    def family(self) -> str:
        return family(self.type)


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
    on_delete: str | None = None
    on_update: str | None = None


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    uniques: list[list[str]] = field(default_factory=list)
    fks: list[ForeignKey] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    sql: str | None = None  # the original CREATE TABLE text
    without_rowid: bool = False
    dialect: str | None = None  # set when it differs from its schema's (carried from ours)

    def col(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        for c in self.columns:
            if c.name.lower() == name.lower():
                return c
        return None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def pk(self) -> list[str]:
        return [c.name for c in sorted((c for c in self.columns if c.pk), key=lambda c: c.pk)]


@dataclass
class Index:
    name: str
    table: str
    columns: list[str]  # column names or expression texts
    unique: bool = False
    where: str | None = None
    sql: str | None = None
    dialect: str | None = None


@dataclass
class View:
    name: str
    sql: str
    dialect: str | None = None


@dataclass
class Trigger:
    name: str
    table: str
    sql: str
    dialect: str | None = None


#: What a SQLite database says about itself besides its tables: the
#: application's schema version and id (apps that migrate by user_version
#: read it first thing) and the file's physical layout.
SETTINGS = ("user_version", "application_id", "page_size", "auto_vacuum")


@dataclass
class Schema:
    dialect: str = "sqlite"
    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    views: dict[str, View] = field(default_factory=dict)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # table -> last value handed out
    source: str = ""
    seq_tables: dict[str, str] = field(default_factory=dict, repr=False)  # sequence -> its table
    #: SQLite database settings (SETTINGS): a database file's, or the
    #: ``PRAGMA name = N`` statements of a .sql file
    settings: dict[str, int] = field(default_factory=dict)

    def table(self, name: str) -> Table | None:
        t = self.tables.get(name)
        if t is None:
            for k, v in self.tables.items():
                if k.lower() == name.lower():
                    return v
        return t

    def existing(self, name: str) -> Table:
        """:meth:`table` for a name the plan has matched: KeyError if absent."""
        t = self.table(name)
        if t is None:
            raise KeyError(name)
        return t

    def to_json(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "source": self.source,
            "tables": [
                {
                    "name": t.name,
                    "columns": [dict(asdict(c), family=c.family) for c in t.columns],
                    "primary_key": t.pk,
                    "unique": t.uniques,
                    "foreign_keys": [asdict(fk) for fk in t.fks],
                    "checks": t.checks,
                }
                for t in self.tables.values()
            ],
            "indexes": [asdict(i) for i in self.indexes.values()],
            "views": [asdict(v) for v in self.views.values()],
            "triggers": [asdict(t) for t in self.triggers.values()],
            "sequences": self.sequences,
            "settings": self.settings,
        }


def quote(name: str) -> str:
    """Quote an identifier for SQLite and PostgreSQL alike (quote.ident)."""
    return _ident(name)


_AUTOINC = re.compile(r"\bAUTOINCREMENT\b", re.I)
_WITHOUT_ROWID = re.compile(r"\bWITHOUT\s+ROWID\b", re.I)


def has_autoincrement(sql: str | None) -> bool:
    return bool(sql and _AUTOINC.search(sql))


def is_without_rowid(sql: str | None) -> bool:
    return bool(sql and _WITHOUT_ROWID.search(sql))
