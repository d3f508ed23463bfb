"""A database with SQLite's -journal beside it, in a tree merge (soak finding)."""

from __future__ import annotations

import shutil
import sqlite3

from volmerge.strategies.tree import merge_trees

from .helpers import make_db

V1 = "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
V2 = "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, pinned INTEGER NOT NULL DEFAULT 0);"


def _hot_copy(src, dest_dir):
    """``src`` and its hot -journal copied while a write transaction is open
    (what a clone of a paused writer, or a killed one, leaves)."""
    dest_dir.mkdir()
    conn = sqlite3.connect(src, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = 1")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO notes(body) VALUES (?)", [("x" * 500,)] * 200)
        for ext in ("", "-journal"):
            shutil.copyfile(f"{src}{ext}", dest_dir / f"notes.db{ext}")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _v1_to_v2_with_a_hot_journal(tmp_path):
    """base v1, theirs v2, ours v1 with one more row caught mid-write."""
    for side in ("base", "theirs"):
        (tmp_path / side).mkdir()
    make_db(tmp_path / "base" / "notes.db", V1)
    make_db(tmp_path / "theirs" / "notes.db", V2)
    live = make_db(tmp_path / "live.db", V1 + "INSERT INTO notes(body) VALUES ('kept');")
    _hot_copy(live, tmp_path / "ours")


def test_ours_hot_journal_is_not_carried_beside_the_replayed_database(tmp_path):
    """The replay reads ours with its journal rolled back; the journal itself
    must not stay beside the replayed (v2) file: the application's first
    open would roll it back onto it, restoring ours' v1 pages."""
    _v1_to_v2_with_a_hot_journal(tmp_path)
    assert (tmp_path / "ours" / "notes.db-journal").stat().st_size > 0
    out = tmp_path / "out"
    rep = merge_trees(tmp_path / "base", tmp_path / "ours", tmp_path / "theirs", out)
    assert not (out / "notes.db-journal").exists(), rep.to_json()
    conn = sqlite3.connect(out / "notes.db")  # as the application opens it
    try:
        assert conn.execute("SELECT body, pinned FROM notes").fetchall() == [("kept", 0)]
    finally:
        conn.close()
    gone = [f for f in rep.files if f.path == "notes.db-journal"]
    assert gone and gone[0].action == "deleted"


def test_ours_journal_stays_beside_ours_database_kept_as_is(tmp_path):
    """Theirs did not change the database: ours' file is kept, and so is its
    journal (the two together are the database)."""
    for side in ("base", "theirs"):
        (tmp_path / side).mkdir()
        make_db(tmp_path / side / "notes.db", V1)
    live = make_db(tmp_path / "live.db", V1 + "INSERT INTO notes(body) VALUES ('kept');")
    _hot_copy(live, tmp_path / "ours")
    out = tmp_path / "out"
    merge_trees(tmp_path / "base", tmp_path / "ours", tmp_path / "theirs", out)
    for ext in ("", "-journal"):
        assert (out / f"notes.db{ext}").read_bytes() == \
            (tmp_path / "ours" / f"notes.db{ext}").read_bytes()
    conn = sqlite3.connect(out / "notes.db")  # rolls the hot journal back
    try:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    finally:
        conn.close()


def test_ours_hot_journal_is_whited_out_in_an_upper_layer(tmp_path):
    """The volume's merge writes an overlay upper layer over ours: the
    journal, still in ours' lower layers, is hidden by a whiteout."""
    import os
    import stat

    _v1_to_v2_with_a_hot_journal(tmp_path)
    out = tmp_path / "out"
    merge_trees(tmp_path / "base", tmp_path / "ours", tmp_path / "theirs", out, mode="upper")
    st = os.lstat(out / "notes.db-journal")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (out / "notes.db").read_bytes()[:16] == b"SQLite format 3\x00"
