"""Dumps are data, never code: names and values of any kind go into a dump
quoted so that `sqlite3` and `psql` load the same tables and rows back and
run nothing else; the .sql reader executes nothing but INSERT … VALUES of
literals."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import subprocess

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volmerge.strategies.errors import BadInput
from volmerge.strategies.sql import plan_replay, replay
from volmerge.strategies.sql import quote as Q
from volmerge.strategies.sql.inserts import check

from .helpers import make_db

_n = itertools.count()

# what a hostile database would name its tables, columns and values
HOSTILE = ["'", '"', "\n", "\r", "\\", ";", "--", "/*", ".", "`", "[", "]", "$$", ":x", "go",
           "\n.system touch canary\n", "\ngo\n", "\n/\n", "'); DROP TABLE keep; --",
           '"); DROP TABLE keep; --', "\n\\! touch canary\n", "\\.", "\t"]
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
names = st.lists(st.sampled_from(HOSTILE) | st.text(_chars, min_size=1, max_size=4),
                 min_size=1, max_size=3).map("".join).filter(
    lambda n: len(n.encode()) <= 60 and not n.lower().startswith("sqlite_") and n.lower() != "keep")


PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
HC = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
NOT_LITERAL = "line 4: .*the values are not literals"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _py(row):
    """A psycopg row with bytea as bytes (as sqlite3 gives BLOBs)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


# ---------------------------------------------------------------------------
# the helpers

def test_identifiers_and_literals():
    assert Q.ident('a"b') == '"a""b"'
    assert Q.sqlite_text("it's") == "'it''s'"
    assert Q.sqlite_text("a\nb\r\x00") == "'a'||char(10)||'b'||char(13,0)"
    assert Q.sqlite_text("\n") == "char(10)"
    assert Q.pg_literal("it's") == "'it''s'"
    assert Q.pg_literal("a\\b'") == "E'a\\\\b'''"
    assert Q.pg_regclass('x"y') == "'\"x\"\"y\"'"
    for bad in (lambda: Q.ident("a\x00b"), lambda: Q.pg_literal("\x00")):
        with pytest.raises(BadInput, match="NUL"):
            bad()


def test_shell_safe_defuses_terminator_lines_and_refuses_two_statements():
    text = "CREATE VIEW v AS SELECT\ngo\n.system id\nFROM go"
    assert Q.shell_safe(text) == "CREATE VIEW v AS SELECT\n/**/go\n.system id\nFROM go"
    assert Q.shell_safe("CREATE TABLE t(a DEFAULT (4\n  /\n.5))") == \
        "CREATE TABLE t(a DEFAULT (4\n/**/  /\n.5))"
    inside = 'CREATE TABLE "a\ngo\n"(x)'  # inside quotes the shell sees no line start
    assert Q.shell_safe(inside) == inside
    trigger = "CREATE TRIGGER tr AFTER INSERT ON t\nBEGIN\n  DELETE FROM t;\n  SELECT 1;\nEND"
    assert Q.shell_safe(trigger) == trigger  # its ';' inside BEGIN ... END do not end it
    with pytest.raises(BadInput, match="more than one statement"):
        Q.shell_safe("CREATE TABLE t(a);\n.system id")
    with pytest.raises(BadInput, match="more than one statement"):
        Q.shell_safe(trigger + ";\n.system id")


@given(st.text(st.characters(blacklist_categories=("Cs",))))
@settings(max_examples=200)
def test_sqlite_literal_reads_back_and_has_no_line_break(s):
    lit = Q.sqlite_text(s)
    assert not any(c in lit for c in "\n\r\x00")
    conn = sqlite3.connect(":memory:")
    assert conn.execute(f"SELECT {lit}").fetchone()[0] == s
    conn.close()


@given(st.lists(st.text(_chars), min_size=1, max_size=20))
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pg_literal_and_identifier_read_back(pg_db, values):
    with psycopg.connect(pg_db) as c:
        for off in ("on", "off"):
            c.execute(f"SET standard_conforming_strings = {off}")
            for v in values:
                sql = f"SELECT {Q.pg_literal(v)} AS {Q.pg_ident(v or 'x')}"
                assert c.execute(sql).fetchone()[0] == v


# ---------------------------------------------------------------------------
# dumps written by the replay

def _hostile_db(path, names_, view=True, nul="\x00"):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE keep(a INTEGER)")
    conn.execute("INSERT INTO keep VALUES (1)")
    for n in names_:
        q = _ident(n)
        conn.execute(f"CREATE TABLE {q}(id INTEGER PRIMARY KEY AUTOINCREMENT, {q} TEXT, b BLOB, "
                     f"r REAL)")
        conn.execute(f"INSERT INTO {q} VALUES (5, ?, ?, ?)",
                     (n + "\n.system touch canary\n" + nul + "!", b"\x00'", 1e308))
    if view:  # "go" alone on a line ends a statement early in the sqlite3 shell; the next line
        # runs as a shell command (".output canary" creates the file; as SQL: go.output AS canary)
        conn.execute(f"CREATE TABLE go(output, {_ident(names_[0])})")
        conn.execute("CREATE VIEW v AS SELECT\ngo\n.output canary\nFROM go")
    conn.commit()
    conn.close()
    return path


def _tables(conn):
    out = {}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                "AND name NOT LIKE 'sqlite_%'").fetchall():
        out[name] = sorted(conn.execute(f"SELECT * FROM {_ident(name)}").fetchall(), key=repr)
    return out


def _sqlite3_load(dump, db, cwd):
    with open(dump) as f:
        p = subprocess.run(["sqlite3", "-bail", str(db)], stdin=f, capture_output=True, text=True,
                           cwd=cwd, timeout=60)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p
    assert "canary" not in os.listdir(cwd)


def test_hostile_names_round_trip_through_the_sqlite3_shell(tmp_path, cli):
    evil = ["x'y", "a\n.system touch canary\n", "q'); DROP TABLE keep; --", 'dq"x', "go\n/\n"]
    src = _hostile_db(tmp_path / "src.db", evil)
    out = tmp_path / "out.sql"
    p = cli("sql", "replay", str(src), "--schema", str(src), "-o", str(out))
    assert p.returncode == 0, p.stderr
    work = tmp_path / "work"
    work.mkdir()
    _sqlite3_load(out, work / "back.db", work)
    with sqlite3.connect(src) as a, sqlite3.connect(work / "back.db") as b:
        assert _tables(b) == _tables(a)
        seq = b.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (evil[1],)).fetchone()
        assert seq == (5,)
    # and the dump reads back through volmerge's own reader
    p = cli("sql", "replay", str(out), "--schema", str(out), "-o", str(tmp_path / "again.db"))
    assert p.returncode == 0, p.stderr
    with sqlite3.connect(src) as a, sqlite3.connect(tmp_path / "again.db") as b:
        assert _tables(b) == _tables(a)


def test_a_quote_in_a_table_name_replays_everywhere(tmp_path, cli, pg_url):
    src = make_db(tmp_path / "src.db",
                  "CREATE TABLE \"it's\"(id INTEGER PRIMARY KEY, \"o'k\" TEXT);"
                  "INSERT INTO \"it's\" VALUES (1, 'x');")
    for dst in ("out.db", "out.sql"):
        p = cli("sql", "replay", str(src), "--schema", str(src), "-o", str(tmp_path / dst))
        assert p.returncode == 0, p.stderr
    p = cli("sql", "replay", str(src), "--schema", str(src), "-o", pg_url)
    assert p.returncode == 0, p.stderr
    with psycopg.connect(pg_url) as c:
        assert c.execute('SELECT * FROM "it\'s"').fetchall() == [(1, "x")]


def test_hostile_names_round_trip_through_psql(tmp_path, pg_db):
    evil = ["x'y", "q'); DROP TABLE keep; --", "a\n\\! touch canary\n", 'dq"x', "b\\"]
    src = _hostile_db(tmp_path / "src.db", evil, view=False, nul="")  # PostgreSQL text holds no NUL
    conn = sqlite3.connect(src)
    q = _ident(evil[2])
    conn.execute(f"UPDATE {q} SET {q} = 'v\n\\! touch canary\n\\.'")
    # the identity column's name goes into the dump's setval(pg_get_serial_sequence(...))
    seq_col = "c'); DROP TABLE keep; --"
    conn.execute(f"CREATE TABLE seqt({_ident(seq_col)} INTEGER PRIMARY KEY AUTOINCREMENT)")
    conn.execute("INSERT INTO seqt VALUES (41)")
    conn.commit()
    conn.close()
    with plan_replay(str(src), schema=str(src), to_dialect="postgres") as plan:
        replay(plan, str(tmp_path / "out.sql"))
    with psycopg.connect(pg_db) as c:
        c.execute("CREATE TABLE keep(a int)")
    p = subprocess.run(PSQL + ["-f", str(tmp_path / "out.sql"), pg_db],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode != 0 and "already exists" in p.stderr  # the dump's own keep table: refused
    with psycopg.connect(pg_db) as c:
        c.execute("DROP TABLE keep")
    p = subprocess.run(PSQL + ["-f", str(tmp_path / "out.sql"), pg_db],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "canary" not in os.listdir(tmp_path)
    with sqlite3.connect(src) as a, psycopg.connect(pg_db) as c:
        want = _tables(a)
        for n in evil + ["keep"]:
            got = c.execute(f"SELECT * FROM {_ident(n)}").fetchall()
            assert sorted(map(_py, got), key=repr) == want[n]
            if n != "keep":  # the identity sequence was set by the dump's setval
                assert c.execute(f"SELECT nextval(pg_get_serial_sequence({Q.pg_regclass(n)}, 'id'))"
                                 ).fetchone() == (6,)
        assert c.execute("SELECT nextval(pg_get_serial_sequence('seqt', %s))", (seq_col,)
                         ).fetchone() == (42,)


# property: arbitrary Unicode names and values, through sqlite3 and psql

_values = st.tuples(st.none() | st.text(_chars | st.just("\x00"), max_size=8),
                    st.none() | st.integers(-2**63, 2**63 - 1),
                    st.none() | st.floats(allow_nan=False), st.none() | st.binary(max_size=6))
_tables_st = st.lists(st.tuples(names, st.lists(names, min_size=4, max_size=4,
                                                unique_by=lambda n: n.lower()),
                                st.lists(_values, max_size=4)),
                      min_size=1, max_size=2, unique_by=lambda t: t[0].lower())


def _property_db(path, tables, nul=True):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE keep(a INTEGER)")
    conn.execute("INSERT INTO keep VALUES (1)")
    for name, cols, rows_ in tables:
        types = ("TEXT", "INTEGER", "REAL", "BLOB")
        conn.execute(f"CREATE TABLE {_ident(name)}("
                     + ", ".join(f"{_ident(c)} {t}" for c, t in zip(cols, types)) + ")")
        conn.executemany(f"INSERT INTO {_ident(name)} VALUES (?, ?, ?, ?)",
                         [(r[0] if nul or r[0] is None else r[0].replace("\x00", ""),) + r[1:]
                          for r in rows_])
    conn.commit()
    conn.close()


@settings(max_examples=30, suppress_health_check=HC)
@given(tables=_tables_st)
def test_any_names_and_values_load_back_through_the_sqlite3_shell(tmp_path, tables):
    d = tmp_path / f"ex{next(_n)}"
    d.mkdir()
    _property_db(d / "src.db", tables)
    with plan_replay(str(d / "src.db"), schema=str(d / "src.db")) as plan:
        replay(plan, str(d / "out.sql"))
    _sqlite3_load(d / "out.sql", d / "back.db", d)
    with sqlite3.connect(d / "src.db") as a, sqlite3.connect(d / "back.db") as b:
        assert _tables(b) == _tables(a)


@settings(max_examples=30, suppress_health_check=HC)
@given(tables=_tables_st)
def test_any_names_and_values_load_back_through_psql(tmp_path, pg_db, tables):
    d = tmp_path / f"pg{next(_n)}"
    d.mkdir()
    _property_db(d / "src.db", tables, nul=False)  # PostgreSQL text cannot hold NUL
    with plan_replay(str(d / "src.db"), schema=str(d / "src.db"), to_dialect="postgres") as plan:
        replay(plan, str(d / "out.sql"))
    schema = f"ex{next(_n)}"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    p = subprocess.run(PSQL + ["-f", str(d / "out.sql"), pg_db],
                       capture_output=True, text=True, cwd=d, timeout=60,
                       env=dict(os.environ, PGOPTIONS=f"-c search_path={schema}"))
    assert p.returncode == 0, p.stderr
    assert "canary" not in os.listdir(d)
    with sqlite3.connect(d / "src.db") as a, psycopg.connect(pg_db) as c:
        c.execute(f"SET search_path = {schema}")
        got = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                       (schema,))}
        want = _tables(a)
        assert got == set(want)
        for name, rows_ in want.items():
            back = [_py(r) for r in c.execute(f"SELECT * FROM {_ident(name)}").fetchall()]
            assert sorted(back, key=repr) == rows_


# ---------------------------------------------------------------------------
# the .sql reader executes nothing but INSERT … VALUES of literals

KEEP = "CREATE TABLE t(a);\nCREATE TABLE keep(a);\nINSERT INTO keep VALUES (1);\n"


@pytest.mark.parametrize("stmt,match", [
    ("INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
     "SELECT x FROM c;", "unsupported statement at line 4: INSERT INTO t WITH RECURSIVE"),
    ("INSERT INTO t SELECT a FROM keep;", "unsupported statement at line 4: INSERT INTO t SELECT"),
    ("INSERT INTO t VALUES ((SELECT count(*) FROM keep));", NOT_LITERAL),
    ("INSERT INTO t VALUES (randomblob(1000000000));", NOT_LITERAL),
    ("INSERT INTO t VALUES (replace(replace('xx', 'x', 'xxxxxxxx'), 'x', 'xxxxxxxx'));",
     NOT_LITERAL),
    ("INSERT INTO t VALUES (1) RETURNING (SELECT 1);",
     r"line 4: INSERT INTO t VALUES \(1\) RETURNING"),
    ("INSERT INTO t VALUES (1 -- '\n, (SELECT a FROM keep) --'\n);", NOT_LITERAL),
    ("ATTACH '/etc/passwd.db' AS x;", "unsupported statement at line 4: ATTACH"),
    (".system touch canary", "unsupported statement at line 4: sqlite3 shell command .system"),
    ("SELECT load_extension('x');", "unsupported statement at line 4: SELECT"),
])
def test_the_reader_refuses_anything_but_literal_rows(tmp_path, cli, stmt, match):
    dump = tmp_path / "bad.sql"
    dump.write_text(KEEP + stmt + "\nINSERT INTO t VALUES (2);\n")
    p = cli("sql", "replay", str(dump), "--schema", str(dump), "-o", str(tmp_path / "out.db"))
    assert p.returncode == 2, p
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert re.search(match, p.stderr), p.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.sql"]


def test_the_reader_accepts_the_literal_forms_dumps_write(tmp_path):
    dump = tmp_path / "ok.sql"
    dump.write_text("CREATE TABLE t(a, b);\n"
                    # as sqlite3's .dump writes a newline
                    "INSERT INTO t VALUES(replace('l1\\012l2\\n','\\012',char(10)), X'00ff');\n"
                    "INSERT INTO t VALUES('a'||char(10,0)||'b', -9e999);\n"  # volmerge
                    "INSERT INTO \"t\" (\"b\", a) VALUES (1.5, 'it''s'), (NULL, TRUE);\n")
    with plan_replay(str(dump), schema=str(dump)) as plan:
        replay(plan, str(tmp_path / "out.db"))
    with sqlite3.connect(tmp_path / "out.db") as c:
        assert c.execute("SELECT a, b FROM t ORDER BY rowid").fetchall() == [
            ("l1\nl2\\n", b"\x00\xff"), ("a\n\x00b", float("-inf")), ("it's", 1.5), (1, None)]


def test_a_trigger_in_a_dump_does_not_fire_while_its_rows_are_read(tmp_path):
    dump = tmp_path / "trig.sql"
    dump.write_text("CREATE TABLE t(a);\nCREATE TABLE log(x);\n"
                    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.a); "
                    "END;\n"
                    "INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\n")
    with plan_replay(str(dump), schema=str(dump)) as plan:
        replay(plan, str(tmp_path / "out.db"))
    with sqlite3.connect(tmp_path / "out.db") as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (2,)
        assert c.execute("SELECT count(*) FROM log").fetchone() == (0,)  # not fired by the rows
        trig = c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        assert trig == [("tr",)]


def test_insert_check_unit():
    ins = check("INSERT INTO \"a\"\"b\" (x) VALUES (1), (-2.5e3, 'x''y', X'00', NULL)", 1)
    assert ins.table == 'a"b'
    ins = check("INSERT INTO public.t OVERRIDING SYSTEM VALUE VALUES (1, B'01', 'x'::text)", 1)
    assert ins.table == "t"
    for bad in ("INSERT INTO t DEFAULT VALUES", "INSERT INTO t VALUES (char(10) || (SELECT 1))",
                "INSERT INTO t VALUES (unistr(x))",
                "INSERT INTO t VALUES (replace('x', 'x', char(1, 2)))"):
        with pytest.raises(BadInput):
            check(bad, 1)


# ---------------------------------------------------------------------------
# statements executed on connections: a hostile source's names and types

def _replay_keeping_the_canary(cli, src, pg_db) -> None:  # type: ignore[no-untyped-def]
    """Replay SQLite ``src`` into ``pg_db`` beside a table ``keep`` that a
    hostile name or text would drop: the replay succeeds and ``keep`` is there."""
    with psycopg.connect(pg_db) as c:
        c.execute("CREATE TABLE keep(a int)")
    p = cli("sql", "replay", str(src), "--schema", str(src), "-o", pg_db)
    assert p.returncode == 0, p.stderr
    with psycopg.connect(pg_db) as c:
        assert c.execute("SELECT count(*) FROM keep").fetchone() == (0,)


def test_hostile_declared_type_and_names_into_postgres(tmp_path, pg_db, cli):
    src = make_db(tmp_path / "src.db",
                  "CREATE TABLE \"t'x\"(id INTEGER PRIMARY KEY AUTOINCREMENT, "
                  "a \"x); DROP TABLE keep; --\", \"b'); DROP TABLE keep; --\" TEXT);"
                  "INSERT INTO \"t'x\" VALUES (1, 2, 'three');")
    _replay_keeping_the_canary(cli, src, pg_db)
    with psycopg.connect(pg_db) as c:
        assert c.execute('SELECT * FROM "t\'x"').fetchall() == [(1, 2, "three")]
        typ = c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = '\"t''x\"'::regclass AND attname = 'a'").fetchone()
        assert typ == ("numeric",)


def test_postgres_source_with_quotes_and_dots_in_names(tmp_path, pg_db, pg_url, cli):
    with psycopg.connect(pg_db) as c:
        c.execute('CREATE TABLE "p.a""r\'nt"(id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, '
                  '"n\'m" text)')
        c.execute('CREATE TABLE "ch\'ild"(id int PRIMARY KEY, p int REFERENCES "p.a""r\'nt"(id))')
        c.execute('INSERT INTO "p.a""r\'nt"("n\'m") VALUES (\'x\'), (\'y\')')
        c.execute('INSERT INTO "ch\'ild" VALUES (1, 2)')
    for dst in (str(tmp_path / "out.db"), pg_url):
        p = cli("sql", "replay", pg_db, "--schema", pg_db, "-o", dst)
        assert p.returncode == 0, p.stderr
    with sqlite3.connect(tmp_path / "out.db") as c:
        parent = c.execute("SELECT \"table\" FROM pragma_foreign_key_list('ch''ild')").fetchall()
        assert parent == [('p.a"r\'nt',)]
        got = c.execute('SELECT * FROM "p.a""r\'nt" ORDER BY id').fetchall()
        assert got == [(1, "x"), (2, "y")]
    with psycopg.connect(pg_url) as c:
        assert c.execute('SELECT * FROM "ch\'ild"').fetchall() == [(1, 2)]
        c.execute('INSERT INTO "p.a""r\'nt"("n\'m") VALUES (\'z\')')
        assert c.execute('SELECT max(id) FROM "p.a""r\'nt"').fetchone() == (3,)


def test_a_type_that_is_not_a_type_name_is_not_pasted_into_ddl():
    from volmerge.strategies.sql.render import render_type
    from volmerge.strategies.sql.schema import Column

    evil = Column("a", "enum('a','b'); DROP TABLE keep; --')")
    assert render_type(evil, "mysql", "postgres") == "TEXT"
    assert render_type(Column("a", "ENUM('a','b')"), "mysql", "postgres") == "TEXT"
    assert render_type(Column("a", "x); DROP TABLE y; --"), "sqlite", "sqlite") == "NUMERIC"
    for ok in ('"char"', "character varying(20)[]", "timestamp(3) with time zone", 'public."My T"'):
        assert render_type(Column("a", ok), "postgres", "postgres") == ok


def test_a_tampered_index_text_is_not_run_on_postgres(tmp_path, pg_db, cli):
    """sqlite_master keeps whatever follows a statement (writable_schema): it
    must not reach PostgreSQL, where one execute runs several statements."""
    src = make_db(tmp_path / "src.db", "CREATE TABLE t(a INTEGER); CREATE INDEX i ON t((a + 1));"
                                       "INSERT INTO t VALUES (1);")
    conn = sqlite3.connect(src)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = sql || '; DROP TABLE keep' WHERE name = 'i'")
    conn.commit()
    conn.close()
    _replay_keeping_the_canary(cli, src, pg_db)
    with psycopg.connect(pg_db) as c:
        assert c.execute("SELECT a FROM t").fetchall() == [(1,)]
