"""Every tree case, one by one, in both output modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from volmerge.strategies.errors import BadInput
from volmerge.strategies.tree import MergeConflict, merge_trees

from .treeutil import Link, build, read, three


def run(tmp: Path, base: dict, ours: dict, theirs: dict, **kw):  # type: ignore[no-untyped-def]
    b, o, t = three(tmp, base, ours, theirs)
    rep = merge_trees(b, o, t, tmp / "out", **kw)
    return read(tmp / "out"), rep


def actions(rep) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {f.path: f.action for f in rep.files}


def test_unchanged(tmp_path: Path) -> None:
    tree = {"a": b"1\n", "d": {"b": b"2\n"}, "empty": {}}
    out, rep = run(tmp_path, tree, tree, tree)
    assert out == tree and rep.files == [] and rep.summary["unchanged"] == 2


def test_changed_on_one_side(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {"a": b"1\n", "b": b"2\n"}, {"a": b"ours\n", "b": b"2\n"},
                   {"a": b"1\n", "b": b"theirs\n"})
    assert out == {"a": b"ours\n", "b": b"theirs\n"}
    assert actions(rep) == {"b": "took-theirs"}


def test_changed_on_both_sides_is_merged(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {"f": b"a\nb\nc\nd\n"}, {"f": b"A\nb\nc\nd\n"}, {"f": b"a\nb\nc\nD\n"})
    assert out == {"f": b"A\nb\nc\nD\n"} and actions(rep) == {"f": "merged"}


def test_added_on_one_side(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {}, {"mine": b"o\n"}, {"new": {"x": b"t\n"}})
    assert out == {"mine": b"o\n", "new": {"x": b"t\n"}}
    assert actions(rep) == {"new/x": "added"}


def test_added_on_both_same_and_different(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {}, {"same": b"s\n", "cfg.json": b'{"a": 1}'},
                   {"same": b"s\n", "cfg.json": b'{"b": 2}'})
    assert out["same"] == b"s\n"
    assert out["cfg.json"] == b'{"a": 1, "b": 2}'  # two-way merge with an empty base
    with pytest.raises(MergeConflict):
        run(tmp_path / "2", {}, {"t": b"one\n"}, {"t": b"two\n"})
    assert not (tmp_path / "2" / "out").exists()


def test_deleted_on_one_side_unchanged_on_other(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {"a": b"1", "b": b"2"}, {"b": b"2"}, {"a": b"1"})
    assert out == {} and actions(rep) == {"b": "deleted"}


def test_delete_modify_conflicts(tmp_path: Path) -> None:
    with pytest.raises(MergeConflict) as ei:
        run(tmp_path, {"a": b"1"}, {"a": b"changed"}, {})
    assert ei.value.report.conflicts[0].conflicts[0].location == "delete/modify"
    out, rep = run(tmp_path / "k", {"a": b"1"}, {}, {"a": b"changed"}, on_conflict="keep-both")
    assert out == {"a.volmerge-new": b"changed"} and actions(rep) == {"a": "kept-both"}
    out, _ = run(tmp_path / "t", {"a": b"1"}, {"a": b"changed"}, {}, on_conflict="theirs")
    assert out == {}


def test_type_changes(tmp_path: Path) -> None:
    # theirs turned a file into a directory, ours left it alone -> directory
    out, _ = run(tmp_path / "1", {"x": b"f"}, {"x": b"f"}, {"x": {"in": b"i"}})
    assert out == {"x": {"in": b"i"}}
    # theirs turned a directory into a symlink, ours left it alone -> symlink
    out, _ = run(tmp_path / "2", {"x": {"in": b"i"}}, {"x": {"in": b"i"}}, {"x": Link("elsewhere")})
    assert out == {"x": Link("elsewhere")}
    # ours changed inside the directory that theirs replaced by a file -> conflict
    with pytest.raises(MergeConflict):
        run(tmp_path / "3", {"x": {"in": b"i"}}, {"x": {"in": b"changed"}}, {"x": b"file"})
    out, rep = run(tmp_path / "4", {"x": b"f"}, {"x": Link("l")}, {"x": {"in": b"i"}},
                   on_conflict="keep-both")
    assert out == {"x": Link("l"), "x.volmerge-new": {"in": b"i"}}


def test_symlink_targets(tmp_path: Path) -> None:
    out, _ = run(tmp_path / "1", {"l": Link("a")}, {"l": Link("a")}, {"l": Link("b")})
    assert out == {"l": Link("b")}
    with pytest.raises(MergeConflict) as ei:
        run(tmp_path / "2", {"l": Link("a")}, {"l": Link("o")}, {"l": Link("t")})
    assert "symlink target" in ei.value.report.conflicts[0].conflicts[0].message


def test_mode_and_owner_changes(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {"f": b"a\nb\nc\n"}, {"f": b"A\nb\nc\n"}, {"f": b"a\nb\nc\n", "g": b"g"})
    os.chmod(t / "f", 0o755)  # theirs: mode only; ours: content only
    os.chown(o / "f", 1234, 1234)
    for p in (b / "f", o / "f", t / "f"):
        if p.parent == b:
            os.chmod(p, 0o644)
    os.chmod(o / "f", 0o644)
    merge_trees(b, o, t, tmp_path / "out")
    st = os.lstat(tmp_path / "out" / "f")
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 1234
    assert (tmp_path / "out" / "f").read_bytes() == b"A\nb\nc\n"
    os.chmod(o / "f", 0o600)  # now both changed the mode
    with pytest.raises(MergeConflict):
        merge_trees(b, o, t, tmp_path / "out2")


def test_empty_directories(tmp_path: Path) -> None:
    out, _ = run(tmp_path, {"gone": {}, "kept": {}}, {"gone": {}, "kept": {}, "mine": {}},
                 {"kept": {}, "new": {}})
    assert out == {"kept": {}, "mine": {}, "new": {}}


def test_directory_deleted_by_theirs_keeps_ours_edits_as_conflict(tmp_path: Path) -> None:
    out, rep = run(tmp_path, {"d": {"a": b"1", "b": b"2"}}, {"d": {"a": b"1", "b": b"mine"}}, {},
                   on_conflict="ours")
    assert out == {"d": {"b": b"mine"}}
    assert actions(rep) == {"d/a": "deleted", "d/b": "kept-ours"}


def test_non_utf8_and_newline_names(tmp_path: Path) -> None:
    weird = os.fsdecode(b"caf\xe9\nname")
    out, rep = run(tmp_path, {weird: b"1\n"}, {weird: b"1\n"}, {weird: b"2\n"})
    assert out == {weird: b"2\n"}
    assert rep.to_json()["files"][0]["path"] == "caf\ufffd\nname"


def test_hardlinks_are_kept(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {"a": b"x"}, {"a": b"x"}, {"a": b"x"})
    for d in (b, o, t):
        os.link(d / "a", d / "b")
    merge_trees(b, o, t, tmp_path / "out")
    sa, sb = os.lstat(tmp_path / "out" / "a"), os.lstat(tmp_path / "out" / "b")
    assert sa.st_ino == sb.st_ino and sa.st_nlink == 2


def test_large_file_streamed(tmp_path: Path) -> None:
    big = os.urandom(1 << 20) * 8  # 8 MiB, copied with copy_file_range
    out, rep = run(tmp_path, {"big": b"old"}, {"big": b"old"}, {"big": big})
    assert out["big"] == big


def test_large_files_changed_on_both_sides_are_whole_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import volmerge.strategies.contentmerge as contentmerge

    monkeypatch.setattr(contentmerge, "MAX_CONTENT", 10)
    out, rep = run(tmp_path, {"f": b"a\nb\nc\nd\ne\nf\n"}, {"f": b"A\nb\nc\nd\ne\nf\n"},
                   {"f": b"a\nb\nc\nd\ne\nF\n"}, on_conflict="ours")
    assert out["f"] == b"A\nb\nc\nd\ne\nf\n" and rep.files[0].strategy == "binary"


def test_upper_mode_writes_only_changes(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {"same": b"s", "gone": b"g", "d": {"x": b"1"}, "f": b"file"},
                    {"same": b"s", "gone": b"g", "d": {"x": b"1"}, "f": b"file"},
                    {"same": b"s", "d": {"x": b"2"}, "f": {"now": b"dir"}, "new": b"n"})
    rep = merge_trees(b, o, t, tmp_path / "up", mode="upper")
    up = tmp_path / "up"
    got = read(up)
    assert "same" not in got
    assert got["gone"] == ("special", stat.S_IFCHR, 0)  # whiteout
    assert got["d"] == {"x": b"2"} and got["new"] == b"n"
    assert got["f"] == {"now": b"dir"}
    assert os.getxattr(up / "f", "trusted.overlay.opaque") == b"y"
    assert rep.summary["written"] == 4


def test_upper_mode_on_a_real_overlay(tmp_path: Path) -> None:
    from volmerge.runtime import sys as rsys

    b, o, t = three(tmp_path, {"a": b"1", "gone": b"g", "d": {"k": b"k"}}, {"a": b"1", "gone": b"g", "d": {"k": b"k"}},
                    {"a": b"2", "d": {"k": b"k", "n": b"n"}})
    (tmp_path / "up").mkdir()
    merge_trees(b, o, t, tmp_path / "up", mode="upper")
    (tmp_path / "work").mkdir()
    (tmp_path / "mnt").mkdir()
    rsys.mount_overlay(tmp_path / "mnt", [str(o)], str(tmp_path / "up"), str(tmp_path / "work"))
    try:
        assert read(tmp_path / "mnt") == read(t)
    finally:
        rsys.umount(tmp_path / "mnt")


def test_no_base(tmp_path: Path) -> None:
    o = build(tmp_path / "o", {"a": b"same", "b": b"ours"})
    t = build(tmp_path / "t", {"a": b"same", "c": b"theirs"})
    merge_trees(None, o, t, tmp_path / "out")
    assert read(tmp_path / "out") == {"a": b"same", "b": b"ours", "c": b"theirs"}


def test_single_files(tmp_path: Path) -> None:
    for n, c in (("b", b"a\nb\nc\n"), ("o", b"A\nb\nc\n"), ("t", b"a\nb\nC\n")):
        (tmp_path / n).write_bytes(c)
    merge_trees(tmp_path / "b", tmp_path / "o", tmp_path / "t", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"A\nb\nC\n"
    (tmp_path / "t").write_bytes(b"X\nb\nc\n")
    merge_trees(tmp_path / "b", tmp_path / "o", tmp_path / "t", tmp_path / "kb", on_conflict="keep-both")
    assert (tmp_path / "kb").read_bytes() == b"A\nb\nc\n"
    assert (tmp_path / "kb.volmerge-new").read_bytes() == b"X\nb\nc\n"


def test_dry_run_writes_nothing_and_diffs(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {"f": b"a\nb\n"}, {"f": b"a\nb\n"}, {"f": b"a\nB\n"})
    rep = merge_trees(b, o, t, tmp_path / "out", dry_run=True, diff=True)
    assert not (tmp_path / "out").exists()
    assert "-b\n+B\n" in rep.diffs["f"]


@pytest.mark.parametrize("bad", ["missing", "nonempty", "mixed", "inside"])
def test_bad_input(tmp_path: Path, bad: str) -> None:
    b, o, t = three(tmp_path, {"a": b"1"}, {"a": b"1"}, {"a": b"2"})
    out = tmp_path / "out"
    if bad == "missing":
        b = tmp_path / "nope"
    elif bad == "nonempty":
        build(out, {"x": b""})
    elif bad == "mixed":
        (tmp_path / "file").write_bytes(b"")
        t = tmp_path / "file"
    else:
        out = o / "sub"
    with pytest.raises(BadInput):
        merge_trees(b, o, t, out)
    assert read(tmp_path / "ours") == {"a": b"1"}


def test_many_files_read_in_parallel(tmp_path: Path) -> None:
    """A directory big enough for the parallel prefetch of contents."""
    base = {f"f{i}": b"%d\n" % (i % 10) for i in range(150)}
    ours = dict(base, f3=b"o\n")
    theirs = dict(base, f4=b"t\n", f6=b"7\n")  # f6: same size, other content
    out, rep = run(tmp_path, base, ours, theirs)
    assert out == dict(base, f3=b"o\n", f4=b"t\n", f6=b"7\n")
    assert actions(rep) == {"f4": "took-theirs", "f6": "took-theirs"}


def test_databases_go_to_the_sql_strategy(tmp_path: Path) -> None:
    """Detection without a policy: SQLite files go to `sql` (when it loads)
    and are handed over by path; the report lists them under "sql"."""
    import sqlite3

    from volmerge.strategies.registry import find_strategy

    assert find_strategy("sql") is not None, "the sql strategy does not load (pip install -e .)"
    b, o, t = three(tmp_path, {}, {}, {})
    for d, rows, extra in ((b, ["a"], ""), (o, ["a", "ours"], ""), (t, ["a"], ", w text default 'x'")):
        con = sqlite3.connect(d / "app.db")
        con.execute(f"create table t (v text{extra})")
        con.executemany("insert into t(v) values (?)", [(r,) for r in rows])
        con.commit()
        con.close()
    rep = merge_trees(b, o, t, tmp_path / "out")
    assert rep.to_json()["sql"][0]["path"] == "app.db"
    con = sqlite3.connect(tmp_path / "out" / "app.db")
    assert con.execute("select v, w from t order by v").fetchall() == [("a", "x"), ("ours", "x")]
    con.close()
