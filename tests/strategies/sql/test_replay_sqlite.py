"""SQLite -> SQLite replay: mapping, defaults, casts, bookkeeping, verification."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from volmerge.strategies.errors import BadInput, NotDone
from volmerge.strategies.sql import plan_replay, replay

from .helpers import make_db, rows, trio

HINTS = {"notes.body": "notes.content"}
DEFAULTS = {"notes.pinned": "0"}


def test_replay_maps_renames_defaults_and_casts(tmp_path):
    base, live, new = trio(tmp_path)
    out = tmp_path / "out.db"
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        assert plan.ok, plan.problems()
        d = plan.to_json()["diff"]
        assert d["columns_renamed"] == {"notes.body": "notes.content"}
        assert "notes.pinned" in d["columns_added"] and "users.email" in d["columns_added"]
        assert d["columns_retyped"] == {"notes.score": "TEXT -> INTEGER"}
        result = replay(plan, str(out))
    assert result.verified
    assert rows(out, "SELECT id, user_id, content, score, pinned FROM notes ORDER BY id") == [
        (1, 1, "hello", 3, 0), (2, 2, "world", 4, 0), (3, 1, "third", None, 0)]
    assert rows(out, "SELECT typeof(score) FROM notes WHERE id = 1") == [("integer",)]
    assert rows(out, "SELECT id, name, email FROM users ORDER BY id") == [(1, "ann", None), (2, "bob", None)]
    # the AUTOINCREMENT counter continues from the source's (3 was handed out, then deleted)
    assert rows(out, "SELECT seq FROM sqlite_sequence WHERE name = 'users'") == [(3,)]
    # bookkeeping: the new version's rows win
    assert rows(out, "SELECT version_num FROM alembic_version") == [("v2",)]
    assert rows(out, "SELECT name FROM sqlite_master WHERE type = 'index'") == [("ix_notes_user",)]
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_missing_not_null_values_name_every_column(tmp_path):
    base, live, new = trio(tmp_path)
    conn = sqlite3.connect(new)
    conn.execute("ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'x'")
    conn.execute("CREATE TABLE t2(a INTEGER)")
    conn.commit()
    conn.close()
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS) as plan:
        assert plan.missing == ["notes.pinned"]
        with pytest.raises(NotDone, match=r"notes\.pinned"):
            replay(plan, str(tmp_path / "out.db"))
    assert not (tmp_path / "out.db").exists()


def test_two_missing_columns_both_named(tmp_path):
    base, live, new = trio(tmp_path)
    conn = sqlite3.connect(new)
    conn.execute("CREATE TABLE x(a)")
    conn.execute("ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'x'")
    conn.commit()
    conn.close()
    make_db(tmp_path / "new2.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                                  "tz TEXT NOT NULL); CREATE TABLE notes(id INTEGER PRIMARY KEY, "
                                  "user_id INTEGER, content TEXT, score INTEGER, pinned BOOLEAN NOT NULL);"
                                  "CREATE TABLE alembic_version(version_num TEXT NOT NULL);")
    with plan_replay(str(live), schema=str(tmp_path / "new2.db"), base=str(base), maps=HINTS) as plan:
        with pytest.raises(NotDone) as ei:
            plan.check()
    assert "users.tz" in str(ei.value) and "notes.pinned" in str(ei.value)


def test_dropped_column_with_data_is_refused_and_counted(tmp_path):
    base, live, new = trio(tmp_path)
    with plan_replay(str(live), schema=str(new), base=str(base), defaults=DEFAULTS) as plan:
        # without the rename hint, body is dropped and content is new
        assert [(x.table, x.column, x.count) for x in plan.losses] == [("notes", "body", 3)]
        with pytest.raises(NotDone, match="data loss refused"):
            replay(plan, str(tmp_path / "out.db"))
    assert not (tmp_path / "out.db").exists()
    with plan_replay(str(live), schema=str(new), base=str(base), defaults=DEFAULTS,
                     allow_data_loss=True) as plan:
        replay(plan, str(tmp_path / "out.db"))
    assert rows(tmp_path / "out.db", "SELECT count(*), count(content) FROM notes") == [(3, 0)]


def test_dropped_table_rows_counted(tmp_path):
    base, live, new = trio(tmp_path)
    make_db(tmp_path / "new2.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
    with plan_replay(str(live), schema=str(tmp_path / "new2.db"), base=str(base)) as plan:
        assert [(x.table, x.column, x.count) for x in plan.losses] == [("notes", None, 3)]
        assert not plan.ok


def test_operator_additions_are_kept(tmp_path):
    extra = ("CREATE TABLE my_tags(id INTEGER PRIMARY KEY, tag TEXT); INSERT INTO my_tags VALUES (1, 'x');"
             "ALTER TABLE notes ADD COLUMN color TEXT; UPDATE notes SET color = 'red' WHERE id = 1;"
             "CREATE INDEX my_ix ON notes(color); CREATE VIEW my_view AS SELECT id FROM notes;")
    base, live, new = trio(tmp_path, extra)
    out = tmp_path / "out.db"
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        d = plan.to_json()["diff"]
        assert d["tables_kept_from_ours"] == ["my_tags"]
        assert d["columns_kept_from_ours"] == ["notes.color"]
        assert d["indexes_kept_from_ours"] == ["my_ix"]
        assert d["views_kept_from_ours"] == ["my_view"]
        replay(plan, str(out))
    assert rows(out, "SELECT color FROM notes WHERE id = 1") == [("red",)]
    assert rows(out, "SELECT * FROM my_tags") == [(1, "x")]
    assert rows(out, "SELECT count(*) FROM my_view") == [(3,)]


def test_clashing_additions_conflict(tmp_path):
    extra = "CREATE INDEX ix_new ON notes(body);"
    base, live, new = trio(tmp_path, extra)
    conn = sqlite3.connect(new)
    conn.execute("CREATE INDEX ix_new ON notes(score)")
    conn.commit()
    conn.close()
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        assert [c.location for c in plan.conflicts] == ["index ix_new"]
        with pytest.raises(NotDone, match="conflict"):
            replay(plan, str(tmp_path / "out.db"))


def test_value_that_does_not_convert_names_table_key_value(tmp_path):
    base, live, new = trio(tmp_path, "INSERT INTO notes VALUES (7, 1, 'x', 'abc');")
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        with pytest.raises(NotDone, match=r"table notes row id=7: column score value 'abc'"):
            replay(plan, str(tmp_path / "out.db"))
    assert sorted(os.listdir(tmp_path)) == ["base.db", "live.db", "new.db"]


def test_constraint_violation_names_table_and_row(tmp_path):
    base, live, new = trio(tmp_path, "INSERT INTO notes VALUES (8, 1, 'dup', NULL);")
    conn = sqlite3.connect(new)
    conn.execute("CREATE UNIQUE INDEX ux_content ON notes(content)")
    conn.commit()
    conn.close()
    make_db(tmp_path / "new2.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                                  "CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER, "
                                  "body TEXT NOT NULL, score TEXT);")
    conn = sqlite3.connect(live)
    conn.execute("UPDATE notes SET body = NULL WHERE id = 2")
    conn.commit()
    conn.close()
    with plan_replay(str(live), schema=str(tmp_path / "new2.db"), base=str(base),
                     allow_data_loss=True) as plan:
        with pytest.raises(NotDone, match=r"constraint violation: table notes row id=2"):
            replay(plan, str(tmp_path / "out.db"))
    assert not (tmp_path / "out.db").exists()


def test_foreign_key_violation_detected(tmp_path):
    base, live, new = trio(tmp_path, "INSERT INTO notes VALUES (9, 42, 'orphan', NULL);")
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        with pytest.raises(NotDone, match=r"constraint violation: table notes row 9: foreign key to users"):
            replay(plan, str(tmp_path / "out.db"))


def test_verification_detects_a_changed_value(tmp_path):
    """A trigger in the new schema that rewrites rows as they arrive is caught
    by the verification (and the destination is not written)."""
    base, live, new = trio(tmp_path)
    make_db(tmp_path / "new2.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                                  "CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER, body TEXT, "
                                  "score TEXT);")
    from volmerge.strategies.sql import replay_sqlite

    original = replay_sqlite._insert_select

    def sabotage(conn, plan, tm):
        original(conn, plan, tm)
        conn.execute("UPDATE main.notes SET body = 'tampered' WHERE id = 2")

    replay_sqlite._insert_select = sabotage
    try:
        with plan_replay(str(live), schema=str(tmp_path / "new2.db"), base=str(base)) as plan:
            with pytest.raises(NotDone, match=r"verification failed: table notes: 1 row\(s\) differ, "
                                              r"first row id=2 differs in column\(s\) body"):
                replay(plan, str(tmp_path / "out.db"))
    finally:
        replay_sqlite._insert_select = original
    assert not (tmp_path / "out.db").exists()


def test_table_rename_hint(tmp_path):
    base, live, new = trio(tmp_path)
    make_db(tmp_path / "new2.db", "CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                                  "CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER, body TEXT, "
                                  "score TEXT); CREATE TABLE alembic_version(version_num TEXT NOT NULL);")
    with plan_replay(str(live), schema=str(tmp_path / "new2.db"), base=str(base),
                     maps={"users": "people"}) as plan:
        replay(plan, str(tmp_path / "out.db"))
    assert rows(tmp_path / "out.db", "SELECT name FROM people ORDER BY id") == [("ann",), ("bob",)]


def test_destination_exists_is_bad_input(tmp_path):
    base, live, new = trio(tmp_path)
    (tmp_path / "out.db").write_bytes(b"keep me")
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        with pytest.raises(BadInput, match="already exists"):
            replay(plan, str(tmp_path / "out.db"))
    assert (tmp_path / "out.db").read_bytes() == b"keep me"


def test_not_a_database_is_bad_input(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00\x01 definitely not sqlite" * 10)
    base, live, new = trio(tmp_path)
    with pytest.raises(BadInput, match="not a database"):
        plan_replay(str(junk), schema=str(new))


def test_bad_rename_hint_is_bad_input(tmp_path):
    base, live, new = trio(tmp_path)
    with pytest.raises(BadInput, match="no column notes.nope"):
        plan_replay(str(live), schema=str(new), maps={"notes.nope": "content"})


def test_no_base_treats_ours_only_as_dropped(tmp_path):
    base, live, new = trio(tmp_path, "CREATE TABLE mine(a); INSERT INTO mine VALUES (1);")
    with plan_replay(str(live), schema=str(new), maps=HINTS, defaults=DEFAULTS) as plan:
        assert [(x.table, x.count) for x in plan.losses] == [("mine", 1)]


def test_live_source_written_during_the_replay_is_replayed_again_in_one_snapshot(tmp_path):
    """The checks after the commit read the source again; when the live
    source (WAL mode, so the application can commit while the replay reads)
    changed meanwhile, the replay is done again in one transaction and the
    result holds the source as it was then, verified."""
    base, live, new = trio(tmp_path)
    app = sqlite3.connect(live)
    app.execute("PRAGMA journal_mode=WAL")
    writes = []

    def progress(table, done, total):
        if not writes and done == total:
            app.execute("INSERT INTO users VALUES (77, 'written meanwhile')")
            app.commit()
            writes.append(table)

    try:
        with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
            res = replay(plan, str(tmp_path / "out.db"), progress=progress)
    finally:
        app.close()
    assert writes and res.source_changed and res.verified
    assert (77, "written meanwhile") in rows(tmp_path / "out.db", "SELECT id, name FROM users")


def test_unchanged_source_is_replayed_once(tmp_path):
    base, live, new = trio(tmp_path)
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        res = replay(plan, str(tmp_path / "out.db"))
    assert res.verified and not res.source_changed
    assert "checks (after the load)" in res.phases


@pytest.mark.parametrize("fill", ["random()", "CURRENT_TIMESTAMP", "strftime('%f', 'now')", "randomblob(4)"])
def test_a_fill_that_reads_no_column_is_evaluated_once(tmp_path, fill):
    """A volatile policy value for a new NOT NULL column: every row gets the
    same value (as ALTER TABLE ... ADD COLUMN ... DEFAULT does) and the
    verification, which evaluates the mapping again, agrees."""
    make_db(tmp_path / "old.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT);"
                                 + "".join(f"INSERT INTO t VALUES ({i}, 'v{i}');" for i in range(50)))
    make_db(tmp_path / "new.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, r NOT NULL);")
    with plan_replay(str(tmp_path / "old.db"), schema=str(tmp_path / "new.db"),
                     defaults={"t.r": fill}) as plan:
        col = next(c for c in plan.tables[0].columns if c.target == "r")
        assert col.fill == fill and col.expr != fill
        res = replay(plan, str(tmp_path / "out.db"))
    assert res.verified
    assert len(rows(tmp_path / "out.db", "SELECT DISTINCT r FROM t")) == 1


def test_a_fill_that_reads_the_row_stays_per_row_and_coalesce_keeps_values(tmp_path):
    make_db(tmp_path / "old.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT);"
                                 "INSERT INTO t VALUES (1, 'x', NULL), (2, 'y', 'kept');")
    make_db(tmp_path / "new.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT NOT NULL, "
                                 "c TEXT NOT NULL);")
    with plan_replay(str(tmp_path / "old.db"), schema=str(tmp_path / "new.db"),
                     defaults={"t.c": "a || '!'", "t.b": "hex(randomblob(2))"}) as plan:
        cols = {c.target: c for c in plan.tables[0].columns}
        assert cols["c"].expr == "a || '!'" and cols["b"].how == "coalesce"
        res = replay(plan, str(tmp_path / "out.db"))
    assert res.verified
    got = rows(tmp_path / "out.db", "SELECT id, b, c FROM t ORDER BY id")
    assert [r[2] for r in got] == ["x!", "y!"] and got[1][1] == "kept" and len(got[0][1]) == 4


def _settings(path) -> dict[str, int]:
    return {k: rows(path, f"PRAGMA {k}")[0][0]
            for k in ("user_version", "application_id", "page_size", "auto_vacuum")}


@pytest.mark.parametrize("rows_in_live", [True, False])
def test_database_settings_follow_the_new_version(tmp_path, rows_in_live):
    """user_version is the schema's version number to apps that migrate by
    it: the new file gets the new version's, as it gets its schema (left at
    0 such an app would run its first-run migrations on a full database)."""
    base, live, new = trio(tmp_path)
    for path, uv in ((live, 1), (new, 2)):
        make_db(path, f"PRAGMA user_version = {uv}; PRAGMA application_id = {0x564D00 + uv};")
    # the new version's file layout too (VACUUM applies page size and auto_vacuum)
    make_db(new, "PRAGMA page_size = 8192; PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
    if not rows_in_live:
        make_db(live, "DELETE FROM notes; DELETE FROM users;")
    out = tmp_path / "out.db"
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        s = plan.to_json()["settings"]
        assert s["user_version"] == {"value": 2, "from": "theirs"}
        assert s["page_size"] == {"value": 8192, "from": "theirs"}
        replay(plan, str(out))
    assert _settings(out) == {"user_version": 2, "application_id": 0x564D02, "page_size": 8192,
                              "auto_vacuum": 2}


def test_settings_from_a_schema_file_and_else_from_the_live_database(tmp_path):
    base, live, new = trio(tmp_path)
    make_db(live, "PRAGMA user_version = 7; PRAGMA application_id = 42;")
    schema_sql = "\n".join(r[0] + ";" for r in rows(
        new, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"))
    plain = tmp_path / "new.sql"
    plain.write_text(schema_sql + "\n")
    versioned = tmp_path / "new-v8.sql"
    versioned.write_text("PRAGMA user_version = 8;\nPRAGMA main.page_size=16384;\n" + schema_sql + "\n")
    for schema, want in ((plain, {"user_version": 7, "application_id": 42, "page_size": 4096}),
                         (versioned, {"user_version": 8, "application_id": 42, "page_size": 16384})):
        out = tmp_path / f"out-{schema.stem}.db"
        with plan_replay(str(live), schema=str(schema), base=str(base), maps=HINTS,
                         defaults=DEFAULTS) as plan:
            assert plan.to_json()["settings"]["user_version"]["from"] == (
                "theirs" if schema is versioned else "ours")
            replay(plan, str(out))
        got = _settings(out)
        assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("pragma, message", [
    ("PRAGMA user_version = seven;", "is not a number"),
    ("PRAGMA page_size = 1000;", "out of range"),
    ("PRAGMA auto_vacuum = 5;", "out of range"),
])
def test_a_bad_setting_in_a_schema_file_is_bad_input(tmp_path, pragma, message):
    base, live, new = trio(tmp_path)
    schema = tmp_path / "bad.sql"
    schema.write_text("CREATE TABLE t(a INTEGER);\n" + pragma + "\n")
    with pytest.raises(BadInput, match=f"line 2 {message}|at line 2 .*{message}"):
        plan_replay(str(live), schema=str(schema))


def test_files_of_a_killed_replay_are_swept_live_ones_kept(tmp_path):
    """A replay killed mid-build leaves its temporary database (and journal,
    and lock file) beside the destination; the next replay to that
    destination removes them — not those of a replay still running (its
    lock file is flock()ed), nor another destination's.  Age plays no part:
    a temporary file without a lock file is a dead replay's however young."""
    import fcntl

    base, live, new = trio(tmp_path)
    stale = time.time() - 60
    dead = [tmp_path / ".out.db.volmerge-dead0000.tmp", tmp_path / ".out.db.volmerge-dead0000.tmp-journal",
            tmp_path / ".out.db.volmerge-dead0000.lock", tmp_path / ".out.db.volmerge-orphan00.tmp"]
    running = [tmp_path / ".out.db.volmerge-live0000.tmp", tmp_path / ".out.db.volmerge-live0000.lock"]
    young = tmp_path / ".out.db.volmerge-young000.tmp"
    other = tmp_path / ".other.db.volmerge-dead1111.tmp"
    for p in [*dead, *running, young, other]:
        p.write_bytes(b"x")
        if p is not young:
            os.utime(p, (stale, stale))
    fd = os.open(running[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
            assert replay(plan, str(tmp_path / "out.db")).verified
    finally:
        os.close(fd)
    left = sorted(p.name for p in tmp_path.iterdir() if ".volmerge-" in p.name)
    assert left == sorted(p.name for p in [*running, other])


def test_a_lock_file_nobody_holds_is_swept_however_young(tmp_path):
    """The advisory lock decides, not an age rule: a replay killed a moment
    ago left a lock file nobody holds (the kernel let its flock go) — the
    next replay removes it and its temporary database at once."""
    base, live, new = trio(tmp_path)
    dead = [tmp_path / ".out.db.volmerge-justnow0.tmp", tmp_path / ".out.db.volmerge-justnow0.lock"]
    for p in dead:
        p.write_bytes(b"x")
    with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS, defaults=DEFAULTS) as plan:
        assert replay(plan, str(tmp_path / "out.db")).verified
    assert [p.name for p in tmp_path.iterdir() if ".volmerge-" in p.name] == []


def test_a_build_holds_its_lock_file_against_a_sweep(tmp_path):
    """hold() returns a lock file that is flock()ed and named by its path;
    a sweep meanwhile leaves it and its temporary database alone."""
    from volmerge.strategies.sql import sqlitefiles

    stem, fd = sqlitefiles.hold(str(tmp_path), "out.db")
    try:
        (tmp_path / (os.path.basename(stem) + ".tmp")).write_bytes(b"x")
        assert sqlitefiles.sweep(str(tmp_path), "out.db") == []
        assert os.path.exists(stem + ".lock") and os.path.exists(stem + ".tmp")
        os.unlink(stem + ".tmp")
    finally:
        sqlitefiles.let_go(stem, fd)
    assert not os.path.exists(stem + ".lock")


def test_a_builder_tells_its_lock_file_from_one_put_in_its_place(tmp_path):
    """What hold() checks after flock(): the path still names the file it
    locked.  A sweep that took the lock first removed that file; a file
    made under the name since is not the builder's."""
    from volmerge.strategies.sql import sqlitefiles

    path = str(tmp_path / ".out.db.volmerge-race0000.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert sqlitefiles._names(path, fd)
        os.unlink(path)
        assert not sqlitefiles._names(path, fd)
        with open(path, "w"):
            pass
        assert not sqlitefiles._names(path, fd)
    finally:
        os.close(fd)


def test_parallel_builds_into_one_destination(tmp_path):
    """Four replays into the same new file at once, four times (sqlitefiles'
    lock files between them: each build's sweep of the destination's
    directory meets the others' held locks and leaves their files alone).
    One lands whole, the others are refused as the file exists; nothing
    temporary is left."""
    import threading

    base, live, new = trio(tmp_path)
    for round_ in range(4):
        out = tmp_path / f"out{round_}.db"
        done: list[object] = []
        go = threading.Barrier(4)

        def build(out: Path = out, done: list[object] = done,
                  go: threading.Barrier = go) -> None:
            try:
                with plan_replay(str(live), schema=str(new), base=str(base), maps=HINTS,
                                 defaults=DEFAULTS) as plan:
                    go.wait(timeout=30)
                    done.append(replay(plan, str(out)).verified)
            except BaseException as exc:  # noqa: BLE001 - checked below
                done.append(exc)

        threads = [threading.Thread(target=build) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert done.count(True) == 1, done
        assert all(isinstance(e, BadInput) and "already exists" in str(e)
                   for e in done if e is not True), done
        assert rows(out, "SELECT id, content FROM notes ORDER BY id") == [
            (1, "hello"), (2, "world"), (3, "third")]
        assert rows(out, "PRAGMA integrity_check") == [("ok",)]
        assert sorted(p.name for p in tmp_path.iterdir() if ".volmerge-" in p.name) == []
