"""Property: a replay preserves every row and value (SQLite->SQLite, SQLite->PG)."""

from __future__ import annotations

import itertools
import math
import sqlite3

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volmerge.strategies.sql import plan_replay, replay

_n = itertools.count()

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20)
reals = st.floats(allow_nan=False, allow_infinity=False, width=64)
row = st.tuples(st.integers(-2**63, 2**63 - 1), st.none() | text, st.none() | reals,
                st.none() | st.binary(max_size=12), st.booleans())
tables = st.lists(row, max_size=25, unique_by=lambda r: r[0])

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, r REAL, b BLOB, f BOOLEAN NOT NULL);"


def _src(d, data):
    src = d / "src.db"
    conn = sqlite3.connect(src)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", data)
    conn.commit()
    conn.close()
    new = d / "new.db"
    conn = sqlite3.connect(new)
    conn.executescript(SCHEMA)
    conn.close()
    return src, new


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=tables)
def test_sqlite_replay_preserves_rows(tmp_path, data):
    d = tmp_path / f"ex{next(_n)}"
    d.mkdir()
    src, new = _src(d, data)
    with plan_replay(str(src), schema=str(new)) as plan:
        replay(plan, str(d / "out.db"))
    conn = sqlite3.connect(d / "out.db")
    got = conn.execute("SELECT id, s, r, b, f FROM t ORDER BY id").fetchall()
    conn.close()
    assert got == sorted((i, s, r, b, int(f)) for i, s, r, b, f in data)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=tables)
def test_sqlite_to_postgres_preserves_rows(tmp_path, pg_server, data):
    d = tmp_path / f"pg{next(_n)}"
    d.mkdir()
    src, new = _src(d, data)
    url = pg_server.url(f"prop{next(_n)}")
    try:
        with plan_replay(str(src), schema=str(new)) as plan:
            replay(plan, url)
        with psycopg.connect(url) as c:
            got = c.execute("SELECT id, s, r, b, f FROM t ORDER BY id").fetchall()
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{url.split("/")[3].split("?")[0]}" WITH (FORCE)')
    want = sorted((i, s, r, b, bool(f)) for i, s, r, b, f in data)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and g[3:] == w[3:]
        assert (g[2] is None and w[2] is None) or math.isclose(g[2], w[2], rel_tol=0, abs_tol=0) \
            or g[2] == w[2]
