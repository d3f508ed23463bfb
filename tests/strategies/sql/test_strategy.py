"""The `sql` strategy as the tree merge sees it (entry point, detection, options)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
from importlib.metadata import entry_points
from pathlib import Path

from volmerge.strategies.base import FileStrategy, MergeOptions
from volmerge.strategies.sql.strategy import SqlReplayStrategy, sql_options

from .helpers import rows, trio


def test_registered_as_entry_point():
    eps = {e.name: e for e in entry_points(group="volmerge.strategies")}
    cls = eps["sql"].load()
    assert cls is SqlReplayStrategy
    assert isinstance(cls(), FileStrategy)


def test_detection():
    s = SqlReplayStrategy()
    assert s.handles("data/app.db", b"SQLite format 3\x00rest")
    assert s.handles("init/schema.sql", b"CREATE TABLE")
    assert not s.handles("conf/app.ini", b"[x]")


def test_merge_files_replays_with_policy_options(tmp_path):
    base, live, new = trio(tmp_path)

    class Pol:  # what strategies.policy.Policy offers
        def table(self, name):
            return {"rename": {"notes.body": "notes.content"}} if name == "sql" else {}

    opts = MergeOptions(options={"policy": Pol(), "defaults": {"notes.pinned": 0}})
    assert sql_options(opts)["defaults"] == {"notes.pinned": 0}
    out = tmp_path / "out.db"
    fr = SqlReplayStrategy().merge_files("app.db", str(base), str(live), str(new), str(out), opts)
    assert fr.action == "merged", fr
    assert any("renamed: notes.body -> notes.content" in n for n in fr.notes)
    assert rows(out, "SELECT content, pinned FROM notes WHERE id = 1") == [("hello", 0)]


def test_conflict_reports_and_writes_nothing(tmp_path):
    base, live, new = trio(tmp_path)
    out = tmp_path / "out.db"
    fr = SqlReplayStrategy().merge_files("app.db", str(base), str(live), str(new), str(out),
                                         MergeOptions(options={}))
    assert fr.action == "conflict"
    assert any("notes.pinned" in c.message for c in fr.conflicts)
    assert not out.exists()
    fr = SqlReplayStrategy().merge_files("app.db", str(base), str(live), str(new), str(out),
                                         MergeOptions(on_conflict="ours", options={}))
    assert fr.action == "kept-ours" and out.read_bytes() == live.read_bytes()


def test_plain_dict_options(tmp_path):
    base, live, new = trio(tmp_path)
    shutil.copy(new, tmp_path / "theirs.db")
    out = tmp_path / "out.db"
    opts = MergeOptions(options={"sql": {"rename": {"notes.body": "content"},
                                         "defaults": {"notes.pinned": "1"}}})
    fr = SqlReplayStrategy().merge_files("x.db", None, str(live), str(tmp_path / "theirs.db"), str(out), opts)
    # without a base, nothing can be told apart from dropped: still fine here (no ours-only data)
    assert fr.action == "merged", fr
    assert rows(out, "SELECT DISTINCT pinned FROM notes") == [(1,)]


# -- the identities (conformance) and frozen, read-only inputs -----------------

def _tree_state(d: Path) -> dict[str, tuple[int, str, int]]:
    return {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.iterdir())}


@contextlib.contextmanager
def read_only_inputs(tmp: Path, files: dict[str, Path]):
    """Each input in its own directory, bind-mounted read-only, reached the way
    the tree merge passes it: /proc/self/fd/N/name."""
    from volmerge.runtime import sys as rsys

    MS_BIND, MS_RDONLY, MS_REMOUNT = 4096, 1, 32
    dirs, fds, paths = [], [], {}
    try:
        for role, src in files.items():
            d = tmp / f"in-{role}"
            d.mkdir(parents=True)
            for ext in ("", "-wal", "-journal"):  # the file and any -wal / -journal beside it
                if Path(f"{src}{ext}").exists():
                    shutil.copyfile(f"{src}{ext}", d / f"db{ext}")
            rsys.mount(str(d), d, None, MS_BIND)
            dirs.append(d)
            rsys.mount(None, d, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            fds.append(fd)
            paths[role] = f"/proc/self/fd/{fd}/db"
        before = {d.name: _tree_state(d) for d in dirs}
        yield paths
        assert {d.name: _tree_state(d) for d in dirs} == before, "an input directory changed"
    finally:
        for fd in fds:
            os.close(fd)
        for d in dirs:
            rsys.umount(d)


def test_identities_copy_instead_of_replaying(tmp_path):
    base, live, new = trio(tmp_path)
    s = SqlReplayStrategy()
    cases = [("all same", base, base, base, base, "unchanged"),
             ("only ours changed", base, live, base, live, "unchanged"),
             ("only theirs changed", base, base, new, new, "took-theirs"),
             ("same change on both", base, live, live, live, "unchanged")]
    for label, b, o, t, want, action in cases:
        out = tmp_path / f"{label.replace(' ', '-')}.db"
        with read_only_inputs(tmp_path / label.replace(" ", "-"), {"b": b, "o": o, "t": t}) as p:
            fr = s.merge_files("app.db", p["b"], p["o"], p["t"], str(out), MergeOptions(options={}))
        assert fr.action == action, (label, fr)
        assert out.read_bytes() == want.read_bytes(), label


def test_replay_from_read_only_inputs_with_a_wal(tmp_path):
    """A live database in WAL mode whose last commits are only in its -wal:
    they are carried, and nothing is created in (or written to) the inputs."""
    base, live, new = trio(tmp_path)
    wal = tmp_path / "wal" / "live.db"
    wal.parent.mkdir()
    shutil.copyfile(live, wal)
    conn = sqlite3.connect(wal)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO notes VALUES (4, 2, 'only in the wal', '7')")
    conn.commit()
    try:
        assert (wal.parent / "live.db-wal").stat().st_size > 0
        out = tmp_path / "out.db"
        opts = MergeOptions(options={"rename": {"notes.body": "content"}, "defaults": {"notes.pinned": 0}})
        with read_only_inputs(tmp_path, {"b": base, "o": wal, "t": new}) as p:
            fr = SqlReplayStrategy().merge_files("app.db", p["b"], p["o"], p["t"], str(out), opts)
    finally:
        conn.close()
    assert fr.action == "merged", fr
    assert rows(out, "SELECT id, content FROM notes ORDER BY id")[-1] == (4, "only in the wal")
    assert sorted(os.listdir(tmp_path / "in-o")) == ["db", "db-wal"]
