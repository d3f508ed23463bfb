"""A tree nested far deeper than Python's recursion limit (issue 14, 4):
the merge walk is iterative; beyond MAX_DEPTH levels it refuses, cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.volmerge.volumes.helpers import deep_tree
from volmerge.strategies.errors import BadInput
from volmerge.strategies.nodes import MAX_DEPTH
from volmerge.strategies.tree import merge_trees

DEEP = 10_000


def _trees(tmp_path: Path) -> tuple[Path, Path, Path]:
    sides = []
    for side in ("base", "ours", "theirs"):
        d = tmp_path / side
        (d / "etc").mkdir(parents=True)
        (d / "etc" / "app.conf").write_text("port = 80\n")
        sides.append(d)
    (sides[2] / "etc" / "app.conf").write_text("port = 81\n")
    return sides[0], sides[1], sides[2]


def test_deep_tree_only_in_ours_is_left_alone_by_an_upper_merge(
        tmp_path: Path, deep_paths: list[Path]) -> None:  # noqa: F811
    """The upgrade case: a container nested a tree in its volume; the merge
    writes only what differs from ours, so it never descends into it."""
    base, ours, theirs = _trees(tmp_path)
    deep_paths.append(ours)
    (ours / "junk").mkdir()
    deep_tree(ours / "junk", DEEP)
    out = tmp_path / "out"
    report = merge_trees(base, ours, theirs, out, mode="upper")
    assert report.written and (out / "etc" / "app.conf").read_text() == "port = 81\n"
    assert sorted(os.listdir(out)) == ["etc"]


@pytest.mark.parametrize("where", ["ours", "both"])
def test_cli_merge_of_a_deep_tree_is_refused_cleanly(
        tmp_path: Path, deep_paths: list[Path], where: str) -> None:  # noqa: F811
    base, ours, theirs = _trees(tmp_path)
    for side in ((ours, theirs) if where == "both" else (ours if where == "ours" else theirs,)):
        deep_paths.append(side)
        deep_tree(side, DEEP)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "volmerge", "merge", str(base), str(ours),
                        str(theirs), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("volmerge: error: ") and p.stderr.count("\n") == 1, p.stderr[-2000:]
    assert f"more than {MAX_DEPTH} levels" in p.stderr and len(p.stderr) < 400
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["base", "ours", "theirs"]  # no temporary left


def test_merge_at_the_limit_is_exact_with_a_1024_descriptor_limit(
        tmp_path: Path, deep_paths: list[Path]) -> None:  # noqa: F811
    """MAX_DEPTH levels, four times what the recursive walk survived, under
    the usual soft limit of 1024 descriptors (the merge raises it)."""
    import resource

    levels = MAX_DEPTH - 1
    base, ours, theirs = _trees(tmp_path)
    leaf = Path(*["d"] * levels)
    for side in (base, ours, theirs):
        deep_paths.append(side)
        deep_tree(side, levels, leaf="same")
        (side / leaf / "conf").write_text("a = 1\nb = 2\nc = 3\n")
    (ours / leaf / "conf").write_text("a = 10\nb = 2\nc = 3\n")
    (theirs / leaf / "conf").write_text("a = 1\nb = 2\nc = 30\n")
    (theirs / leaf / "new").write_text("from theirs\n")
    (ours / "mine").mkdir()
    deep_tree(ours / "mine", levels - 1)  # only in ours: copied whole into the full result
    out = tmp_path / "out"
    deep_paths.append(out)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        report = merge_trees(base, ours, theirs, out)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1024  # put back
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.written and not report.conflicts
    assert (out / leaf / "conf").read_text() == "a = 10\nb = 2\nc = 30\n"
    assert (out / leaf / "new").read_text() == "from theirs\n"
    assert (out / leaf / "same").exists()
    assert (out / "etc" / "app.conf").read_text() == "port = 81\n"
    assert (out / "mine" / Path(*["d"] * (levels - 1)) / "f").exists()


def test_type_change_compares_deep_directories(
        tmp_path: Path, deep_paths: list[Path]) -> None:  # noqa: F811
    """theirs replaced a deep directory ours left as it was (deep_equal)."""
    base, ours, theirs = _trees(tmp_path)
    for side in (base, ours):
        deep_paths.append(side)
        (side / "x").mkdir()
        deep_tree(side / "x", 600)
    (theirs / "x").write_text("now a file\n")
    out = tmp_path / "out"
    report = merge_trees(base, ours, theirs, out)
    assert (out / "x").read_text() == "now a file\n" and not report.conflicts
    with pytest.raises(BadInput, match="more than"):
        deep_tree(base / "x" / Path(*["d"] * 600), MAX_DEPTH)
        deep_tree(ours / "x" / Path(*["d"] * 600), MAX_DEPTH)
        merge_trees(base, ours, theirs, tmp_path / "out2")


def test_give_chowns_a_deep_clone_never_a_symlink_target(
        tmp_path: Path, deep_paths: list[Path]) -> None:  # noqa: F811
    """give() hands a clone of a container's PostgreSQL data to the server's
    user: iteratively, and a symlink planted in the data is chowned itself,
    never what it points at (the host's /etc/shadow, here a sentinel)."""
    from volmerge.strategies.sql.pgtemp import give

    sentinel = tmp_path / "shadow"
    sentinel.write_text("root only\n")
    data = tmp_path / "pgdata"
    data.mkdir()
    deep_paths.append(data)
    os.symlink(sentinel, data / "evil")
    deep_tree(data, 2000)

    give(str(data), (999, 998))
    assert (sentinel.stat().st_uid, sentinel.stat().st_gid) == (0, 0)
    assert os.lstat(data / "evil").st_uid == 999 and os.lstat(data).st_uid == 999
    leaf = data / Path(*["d"] * 100)
    assert (leaf.stat().st_uid, leaf.stat().st_gid) == (999, 998)
