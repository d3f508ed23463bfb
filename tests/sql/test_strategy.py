"""The `sql` strategy as the tree merge sees it (entry point, detection, options)."""

from __future__ import annotations

import shutil
from importlib.metadata import entry_points

from strategies.base import FileStrategy, MergeOptions
from strategies.sql.strategy import SqlReplayStrategy, sql_options

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
