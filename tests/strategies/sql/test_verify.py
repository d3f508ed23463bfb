"""Verification: a table with a key is compared row by row in one join,
one without a key by order-independent checksums; either catches every kind
of tampering with a carried value, and nothing is written when it does."""

from __future__ import annotations

import contextlib
import re

import pytest

from volmerge.strategies.errors import NotDone
from volmerge.strategies.sql import plan_replay, replay, replay_sqlite

from .helpers import make_db

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

SCHEMA = """
CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE NOT NULL, score REAL, n INTEGER, x);
CREATE TABLE tags(user_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (user_id, tag)) WITHOUT ROWID;
CREATE TABLE codes(code TEXT NOT NULL UNIQUE, label TEXT);
CREATE TABLE log(msg TEXT, at INTEGER);
"""
ROWS = """
INSERT INTO users VALUES (1, 'Ann', 1.5, 5, 5), (2, 'Bob', NULL, 7, x'00'), (3, 'Cid', 2.0, NULL, 'z');
INSERT INTO tags VALUES (1, 'a'), (1, 'b'), (2, 'a');
INSERT INTO codes VALUES ('x', 'ex'), ('y', NULL);
INSERT INTO log VALUES ('started', 1), ('started', 1), ('stopped', 2);
"""


@contextlib.contextmanager
def tampering(sql: str):
    """Run ``sql`` (statements separated by ``;``) on the new database right
    after the rows of the table it names are copied, before that table is
    committed and verified."""
    table = re.search(r"(?:UPDATE|DELETE FROM|INSERT INTO)\s+(\w+)", sql).group(1)
    original = replay_sqlite._insert_select

    def sabotage(conn, plan, tm):
        original(conn, plan, tm)
        if tm.target == table:
            for st in sql.split(";"):
                conn.execute(st)

    replay_sqlite._insert_select = sabotage
    try:
        yield
    finally:
        replay_sqlite._insert_select = original


def _replay(tmp_path, name="out.db"):
    src = make_db(tmp_path / "src.db", SCHEMA + ROWS) if not (tmp_path / "src.db").exists() else tmp_path / "src.db"
    with plan_replay(str(src), schema=str(src)) as plan:
        return replay(plan, str(tmp_path / name))


def test_keyed_where_a_key_exists_checksum_elsewhere(tmp_path):
    res = _replay(tmp_path)
    how = {t["table"]: t["verified_by"] for t in res.tables}
    assert how == {"users": "key", "tags": "key", "codes": "key", "log": "checksum"}


@pytest.mark.parametrize("sql, message", [
    ("UPDATE users SET name = 'ann' WHERE id = 1",  # equal under NOCASE, not the same value
     r"table users: 1 row\(s\) differ, first row id=1 differs in column\(s\) name"),
    ("UPDATE users SET x = '5' WHERE id = 1",  # text where the integer was (no affinity)
     r"table users: 1 row\(s\) differ, first row id=1 differs in column\(s\) x"),
    ("UPDATE users SET x = char(0) WHERE id = 2",  # text where the blob was
     r"first row id=2 differs in column\(s\) x"),
    ("UPDATE users SET score = 1.5000001 WHERE id = 1", r"row id=1 differs in column\(s\) score"),
    ("UPDATE users SET score = 0 WHERE id = 2", r"row id=2 differs in column\(s\) score"),
    ("UPDATE users SET id = 4 WHERE id = 3", r"row id=3 is missing from the destination"),
    ("DELETE FROM users WHERE id = 2", r"table users: 3 rows in the source, 2 in the destination"),
    ("UPDATE tags SET tag = 'c' WHERE user_id = 2", r"table tags: 1 row\(s\) differ, first row user_id=2, "
                                                    r"tag='a' is missing"),
    ("UPDATE codes SET label = 'EX' WHERE code = 'x'", r"row code='x' differs in column\(s\) label"),
    ("UPDATE log SET at = 3 WHERE msg = 'stopped'", r"table log: checksum differs in column\(s\) at"),
    ("DELETE FROM log WHERE rowid = 1; INSERT INTO log VALUES ('stopped', 2)",
     r"table log: checksum differs in column\(s\) msg, at"),
])
def test_tampering_is_caught_and_nothing_written(tmp_path, sql, message):
    with tampering(sql):
        with pytest.raises(NotDone, match="verification failed: .*" + message):
            _replay(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.db"]


def test_mapped_columns_are_compared_after_the_mapping(tmp_path):
    """Renamed and retyped columns: the source side is the mapping expression,
    the destination's affinity applied as the INSERT applied it."""
    src = make_db(tmp_path / "src.db", SCHEMA + ROWS)
    new = make_db(tmp_path / "new.db", SCHEMA.replace("n INTEGER", "n TEXT").replace("name TEXT", "label TEXT"))
    with plan_replay(str(src), schema=str(new), maps={"users.name": "label"}) as plan:
        res = replay(plan, str(tmp_path / "out.db"))
    assert {t["table"]: t["verified_by"] for t in res.tables}["users"] == "key"
