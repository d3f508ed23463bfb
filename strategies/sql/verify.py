"""Order-independent checksums, the same definition on both sides.

A table's checksum is (row count, sum over its rows of a 32-bit hash of the
tuple of its carried values, mod 2^64).  Summing makes it independent of row
order; hashing the tuple ties every carried column into it, so a changed,
swapped or missing value changes the sum.  On the source side the hash runs
over the mapping expressions, on the destination over the stored columns:
equal checksums mean the destination holds exactly the mapped rows.  When
they differ, per-column sums name the column(s).

Python's hash() of ints, floats, strings, bytes and None is used: it is fast
(one call per row) and canonical across types that compare equal (1 == 1.0 ==
True), which is what a replay between engines needs.  It is salted per
process, so checksums are compared within one replay, never stored.
"""

from __future__ import annotations

import datetime
import decimal
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1


def canon(v: Any) -> Any:
    """One representation for values that mean the same across engines."""
    if v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    return str(v)


def row_hash(*values: Any) -> int:
    return hash(values) & MASK32


def row_hash_canon(*values: Any) -> int:
    return hash(tuple(canon(v) for v in values)) & MASK32


def register(conn: sqlite3.Connection) -> None:
    """Install the hash and the conversion check as SQL functions."""
    conn.create_function("vm_h", -1, row_hash, deterministic=True)
    conn.create_function("vm_bad", 2, bad_value, deterministic=True)


@dataclass
class Checksum:
    rows: int
    digest: int

    def hex(self) -> str:
        return f"{self.rows}:{self.digest & MASK64:016x}"


def sqlite_checksum(conn: sqlite3.Connection, exprs: list[str], from_sql: str) -> Checksum:
    if not exprs:
        n = conn.execute(f"SELECT count(*) FROM {from_sql}").fetchone()[0]
        return Checksum(n, 0)
    row = conn.execute(f"SELECT count(*), sum(vm_h({', '.join(exprs)})) FROM {from_sql}").fetchone()
    return Checksum(row[0], (row[1] or 0) & MASK64)


def py_checksum(rows: Iterable[tuple[Any, ...]]) -> Checksum:
    n = 0
    total = 0
    for r in rows:
        n += 1
        total += hash(tuple(canon(v) for v in r)) & MASK32
    return Checksum(n, total & MASK64)


def bad_value(v: Any, fam: str) -> int:
    """1 when ``v`` does not convert to the family ``fam`` without loss."""
    if v is None:
        return 0
    try:
        if fam == "integer":
            if isinstance(v, int):
                return 0
            if isinstance(v, float):
                return 0 if v.is_integer() else 1
            if isinstance(v, str):
                s = v.strip()
                try:
                    int(s)
                    return 0
                except ValueError:
                    f = float(s)
                    return 0 if f.is_integer() else 1
            return 1
        if fam in ("real", "numeric"):
            if isinstance(v, (int, float)):
                return 0
            if isinstance(v, str):
                float(v.strip())
                return 0
            return 1
        if fam == "boolean":
            if isinstance(v, int):
                return 0 if v in (0, 1) else 1
            if isinstance(v, str):
                return 0 if v.strip().lower() in ("t", "f", "true", "false", "1", "0", "yes", "no", "on",
                                                  "off") else 1
            return 1
    except (ValueError, OverflowError):
        return 1
    return 0
