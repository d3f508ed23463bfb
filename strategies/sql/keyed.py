"""Verify a replayed SQLite table against its source by key, in one C-speed join.

The checksum of verify.py calls a Python function for every row on both
sides; for a table with a key this is cheaper and at least as strict: one
query scans the source (through the mapping expressions) and looks every row
up in the destination by the key, comparing every carried column::

    SELECT (SELECT count(*) FROM src.t), (SELECT count(*) FROM main.t),
           (SELECT count(*) FROM (SELECT <mapping> FROM src.t) AS s
              CROSS JOIN main.t AS d ON d.k = +s.v0
              WHERE d.k COLLATE BINARY IS +s.v0 AND d.c COLLATE BINARY IS +s.v1 ...)

Why equal counts mean equal tables (as multisets of carried values): the
destination key is unique, so each source row matches at most one
destination row; the source key is unique and compared exactly (BINARY, same
affinity on both sides), so two source rows never match the same one; when
all n source rows match, the matching is a bijection onto the n destination
rows, and matched rows agree in every carried column.  Order plays no part.

``d.c COLLATE BINARY IS +s.v`` applies the destination column's affinity to
the mapped value (``+`` strips the expression's own) — exactly what the
INSERT did — and compares with the BINARY collation, so a case change under
a NOCASE column or '5.0' stored where '5' was due is a mismatch.

A table qualifies only when the query plan really is a key lookup (checked
with EXPLAIN QUERY PLAN); otherwise the caller falls back to the checksum.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from .schema import quote


def affinity(decl: str | None) -> str:
    """SQLite's column affinity of a declared type (datatype3.html, 3.1)."""
    t = (decl or "").upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


@dataclass
class _Info:
    types: dict[str, str]  # column -> declared type
    notnull: set[str]
    keys: list[list[str]]  # unique keys (rowid alias, primary key, unique indexes), plain columns
    binary_keys: list[list[str]]  # those whose index compares with BINARY (usable for = lookups)


def _info(conn: sqlite3.Connection, db: str, table: str) -> _Info:
    cols = conn.execute(f"PRAGMA {db}.table_info({quote(table)})").fetchall()
    types = {c[1]: c[2] or "" for c in cols}
    notnull = {c[1] for c in cols if c[3]}
    pk = [c for c in cols if c[5]]
    keys: list[list[str]] = []
    binary: list[list[str]] = []
    if len(pk) == 1 and (pk[0][2] or "").upper() == "INTEGER":
        # the rowid alias (unless WITHOUT ROWID, where the PK index below covers it)
        keys.append([pk[0][1]])
        binary.append([pk[0][1]])
        notnull.add(pk[0][1])
    for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA {db}.index_list({quote(table)})"):
        if not unique or partial:
            continue
        info = [r for r in conn.execute(f"PRAGMA {db}.index_xinfo({quote(name)})") if r[5]]
        if any(r[1] < 0 for r in info):
            continue  # an expression index
        key = [r[2] for r in info]
        keys.append(key)
        if all((r[4] or "BINARY").upper() == "BINARY" for r in info):
            binary.append(key)
        if origin == "pk":
            notnull.update(key)  # WITHOUT ROWID primary keys refuse NULL
    return _Info(types, notnull, keys, binary)


@dataclass
class KeyedCheck:
    """The pieces of one table's keyed comparison."""

    src_from: str  # src.t
    dst_from: str  # main.t
    select: str  # <mapping expression> AS v0, ...
    on: str  # d.k = +s.v0 AND ...
    same: str  # d.c COLLATE BINARY IS +s.v1 AND ...
    targets: list[str]  # destination column of v0, v1, ...
    key: list[tuple[str, int]]  # (destination key column, index of its v)

    def _join(self) -> str:
        return (f"FROM (SELECT {self.select} FROM {self.src_from}) AS s "
                f"CROSS JOIN {self.dst_from} AS d ON {self.on}")

    def sql(self) -> str:
        """One row: (source rows, destination rows, source rows matched exactly)."""
        return (f"SELECT (SELECT count(*) FROM {self.src_from}), (SELECT count(*) FROM {self.dst_from}), "
                f"(SELECT count(*) {self._join()} WHERE {self.same})")

    def is_lookup(self, conn: sqlite3.Connection) -> bool:
        plan = " ".join(str(r[-1]) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT count(*) {self._join()} WHERE {self.same}"))
        return re.search(r"\bSEARCH (TABLE )?d USING\b", plan) is not None  # (TABLE: SQLite < 3.36)

    def first_mismatch(self, conn: sqlite3.Connection) -> str:
        """Which row and columns differ, for the message (failure path only)."""
        flags = ", ".join(f"d.{quote(t)} COLLATE BINARY IS +s.v{i}" for i, t in enumerate(self.targets))
        first_key = self.key[0][0]
        row = conn.execute(
            f"SELECT {', '.join(f's.v{i}' for _k, i in self.key)}, d.{quote(first_key)} IS NULL, {flags} "
            f"FROM (SELECT {self.select} FROM {self.src_from}) AS s "
            f"LEFT JOIN {self.dst_from} AS d ON {self.on} "
            f"WHERE d.{quote(first_key)} IS NULL OR NOT ({self.same}) LIMIT 1").fetchone()
        if row is None:
            return "a destination row matches no source row"
        n = len(self.key)
        where = "row " + ", ".join(f"{k}={v!r}" for (k, _i), v in zip(self.key, row[:n]))
        if row[n]:
            return f"{where} is missing from the destination"
        bad = [t for t, same in zip(self.targets, row[n + 1:]) if not same]
        return f"{where} differs in column(s) {', '.join(bad)}"


def keyed_check(conn: sqlite3.Connection, dst_table: str, src_db: str, src_table: str,
                pairs: list[tuple[str, str, str | None]]) -> KeyedCheck | None:
    """The keyed comparison of ``main.dst_table`` with ``src_db.src_table``,
    or None when the table has no usable key (then use the checksum).

    ``pairs``: (destination column, source expression, source column when the
    expression is a plain copy of one, else None) for every carried column.
    """
    if not pairs:
        return None
    d = _info(conn, "main", dst_table)
    s = _info(conn, src_db, src_table)
    by_target = {t: (i, col) for i, (t, _expr, col) in enumerate(pairs)}
    chosen: list[tuple[str, int]] | None = None
    for key in d.binary_keys:
        if not set(key) <= d.notnull or not all(k in by_target for k in key):
            continue
        src_cols = [c for k in key if (c := by_target[k][1]) is not None and c in s.types]
        if len(src_cols) != len(key):
            continue
        if any(affinity(d.types.get(k)) != affinity(s.types[c])
               for k, c in zip(key, src_cols)):
            continue
        if not any(set(sk) == set(src_cols) for sk in s.keys):
            continue
        chosen = [(k, by_target[k][0]) for k in key]
        break
    if chosen is None:
        return None
    check = KeyedCheck(
        src_from=f"{src_db}.{quote(src_table)}",
        dst_from=f"main.{quote(dst_table)}",
        select=", ".join(f"{expr} AS v{i}" for i, (_t, expr, _c) in enumerate(pairs)),
        on=" AND ".join(f"d.{quote(k)} = +s.v{i}" for k, i in chosen),
        same=" AND ".join(f"d.{quote(t)} COLLATE BINARY IS +s.v{i}" for i, (t, _e, _c) in enumerate(pairs)),
        targets=[t for t, _e, _c in pairs],
        key=chosen,
    )
    return check if check.is_lookup(conn) else None
