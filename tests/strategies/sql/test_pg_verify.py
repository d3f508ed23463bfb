"""The PostgreSQL -> PostgreSQL verification: typed hashes where every
destination type allows them, the row's text elsewhere, rows bound together
in the checksum, and the source side's thread stopped on failure."""

from __future__ import annotations

import threading

import psycopg
import pytest

from volmerge.strategies.errors import BadInput, NotDone
from volmerge.strategies.sql import plan_replay, read_schema, replay
from volmerge.strategies.sql.pgops import dest_types as _dest_types
from volmerge.strategies.sql.pgops import pg_sum as _pg_sum


def _exec(url: str, *sql: str) -> None:
    with psycopg.connect(url) as c:
        for s in sql:
            c.execute(s)


@pytest.mark.parametrize("typed", [True, False])
def test_checksum_is_order_independent_but_binds_rows(pg_db, typed):
    _exec(pg_db, "CREATE TABLE a (i int, t text)", "CREATE TABLE b (i int, t text)",
          "CREATE TABLE c (i int, t text)",
          "INSERT INTO a VALUES (1, 'x'), (2, 'y'), (3, NULL)",
          "INSERT INTO b VALUES (3, NULL), (2, 'y'), (1, 'x')",   # same rows, other order
          "INSERT INTO c VALUES (1, 'y'), (2, 'x'), (3, NULL)")   # same columns' values, swapped
    with psycopg.connect(pg_db) as conn:
        a, b, c = (_pg_sum(conn, ["i", "t"], t, typed) for t in ("a", "b", "c"))
    assert a == b
    assert a.rows == c.rows and a.digest != c.digest


def test_per_column_typed_hashes_bind_values_to_columns_and_rows(pg_db):
    """The typed checksum with the columns' types: each value by its type's
    own hash, seeded by its column — order-independent, but a value moved to
    another column or row, or a NULL for a value, is a difference."""
    cols = "(i int, j int, n numeric(6,2), t varchar(5), b boolean, d date, ts timestamptz, a int[])"
    rows = {
        "a": "(1, 2, 1.5, 'x', true, '2024-01-02', '2024-01-02 03:04:05+00', '{1,2}'), "
             "(3, 4, NULL, 'y', false, NULL, NULL, NULL)",
        "b": "(3, 4, NULL, 'y', false, NULL, NULL, NULL), "   # the same rows, other order
             "(1, 2, 1.50, 'x', true, '2024-01-02', '2024-01-02 04:04:05+01', '{1,2}')",
        "c": "(2, 1, 1.5, 'x', true, '2024-01-02', '2024-01-02 03:04:05+00', '{1,2}'), "  # i, j swapped
             "(3, 4, NULL, 'y', false, NULL, NULL, NULL)",
        "d": "(1, 4, 1.5, 'x', true, '2024-01-02', '2024-01-02 03:04:05+00', '{1,2}'), "  # j across rows
             "(3, 2, NULL, 'y', false, NULL, NULL, NULL)",
        "e": "(1, 2, 1.5, 'x', true, '2024-01-02', '2024-01-02 03:04:05+00', '{1,2}'), "  # a NULL for 4
             "(3, NULL, NULL, 'y', false, NULL, NULL, NULL)",
    }
    _exec(pg_db, *[f"CREATE TABLE {t} {cols}" for t in rows], *[f"INSERT INTO {t} VALUES {v}" for t, v in rows.items()])
    names = ["i", "j", "n", "t", "b", "d", "ts", "a"]
    with psycopg.connect(pg_db) as conn:
        types = _dest_types(conn, "a", names)
        assert types is not None
        sums = {t: _pg_sum(conn, names, t, True, types) for t in rows}
    assert sums["a"] == sums["b"]
    assert len({sums[t].digest for t in ("a", "c", "d", "e")}) == 4


def test_typed_only_for_builtin_hashable_types(pg_db):
    _exec(pg_db, "CREATE TYPE mood AS ENUM ('sad', 'ok')",
          "CREATE TABLE t (i bigint, n numeric(10,2), s varchar(9), ts timestamptz, a int[], "
          "j json, p point, m mood)")
    with psycopg.connect(pg_db) as conn:
        assert _dest_types(conn, "t", ["i", "n", "s", "ts", "a"]) == [
            "bigint", "numeric(10,2)", "character varying(9)", "timestamp with time zone", "integer[]"]
        assert _dest_types(conn, "t", ["i", "j"]) is None   # json: no extended hash
        assert _dest_types(conn, "t", ["p"]) is None        # point: no hash at all
        assert _dest_types(conn, "t", ["m"]) is None        # a user type: its name may mean nothing on the source


def test_replay_mixes_typed_and_text_verification(pg_db, pg_url):
    _exec(pg_db,
          "CREATE TABLE nums (id serial PRIMARY KEY, n numeric(12,3), f double precision, b boolean, "
          "d date, s varchar(20), arr int[], by bytea)",
          "CREATE TABLE docs (id int PRIMARY KEY, doc json, at point)",
          "INSERT INTO nums (n, f, b, d, s, arr, by) SELECT g * 1.125, g / 3.0, g % 2 = 0, "
          "date '2024-01-01' + g, 'row ' || g, ARRAY[g, NULL, -g], decode(to_hex(g + 16), 'hex') "
          "FROM generate_series(1, 200) g",
          "INSERT INTO nums (n) VALUES (NULL)",
          "INSERT INTO docs SELECT g, json_build_object('k', g, 'l', 'x'), point(g, -g) "
          "FROM generate_series(1, 50) g")
    with plan_replay(pg_db, schema=pg_db) as plan:
        result = replay(plan, pg_url)
    assert result.verified
    assert {t["table"]: t["rows"] for t in result.tables} == {"nums": 201, "docs": 50}
    assert all(t.get("checksum") for t in result.tables)
    with psycopg.connect(pg_url) as c:  # one table of each kind was verified
        assert _dest_types(c, "nums", ["id", "n", "f", "b", "d", "s", "arr", "by"]) is not None
        assert _dest_types(c, "docs", ["id", "doc", "at"]) is None
        assert c.execute("SELECT count(arr), sum(n)::text FROM nums").fetchone() == (200, "22612.500")


def test_failed_build_stops_the_source_checksums(tmp_path, pg_db, pg_url):
    """A PostgreSQL source, a target schema with a foreign key the rows break:
    NotDone, the created database dropped, no thread left running."""
    _exec(pg_db, "CREATE TABLE users (id int PRIMARY KEY, name text)",
          "CREATE TABLE notes (id int PRIMARY KEY, user_id int, body text)",
          "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 2000) g",
          "INSERT INTO notes SELECT g, 1 + g % 2000, 'n' || g FROM generate_series(1, 20000) g",
          "INSERT INTO notes VALUES (0, 4242, 'orphan')")
    schema = tmp_path / "new.sql"
    schema.write_text("CREATE TABLE users (id int PRIMARY KEY, name text);\n"
                      "CREATE TABLE notes (id int PRIMARY KEY, user_id int REFERENCES users(id), body text);\n")
    before = threading.active_count()
    with plan_replay(pg_db, schema=str(schema), from_dialect="postgres") as plan:
        with pytest.raises(NotDone, match=r"constraint violation: table notes: .*\(user_id\)=\(4242\)"):
            replay(plan, pg_url)
    assert threading.active_count() == before
    with pytest.raises(BadInput, match="does not exist"):
        read_schema(pg_url)
