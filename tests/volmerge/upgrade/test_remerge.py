"""The merge again of only the paths written after the merge was staged
(upgrade/remerge.py), on plain directories: no root, no containers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from volmerge.upgrade.remerge import Unsplittable, check_parents, merge_paths, units
from volmerge.volumes.model import Change

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def test_a_database_brings_its_sidecars_and_a_sidecar_its_database() -> None:
    got = units([Change("db/notes.db-journal", "deleted"), Change("a.txt", "modified")])
    assert got == ["a.txt", "a.txt-journal", "a.txt-shm", "a.txt-wal", "db/notes.db",
                   "db/notes.db-journal", "db/notes.db-shm", "db/notes.db-wal"]


def test_a_directory_change_cannot_be_split() -> None:
    with pytest.raises(Unsplittable):
        units([Change("new", "added", "dir"), Change("new/x", "added")])


def _tree(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_a_parent_theirs_replaced_or_deleted_cannot_be_split(tmp_path: Path) -> None:
    base = _tree(tmp_path / "base", {"d/x": "1"})
    ours = _tree(tmp_path / "ours", {"d/x": "2"})
    staged = _tree(tmp_path / "staged", {})
    theirs = _tree(tmp_path / "theirs", {"d": "now a file"})
    with pytest.raises(Unsplittable):
        check_parents(["d/x"], {"base": base, "ours": ours, "theirs": theirs}, staged)
    (theirs / "d").unlink()  # theirs deleted the directory: decided as a whole
    with pytest.raises(Unsplittable):
        check_parents(["d/x"], {"base": base, "ours": ours, "theirs": theirs}, staged)
    base2 = _tree(tmp_path / "base2", {})  # a directory ours added alone: fine
    check_parents(["d/x"], {"base": base2, "ours": ours, "theirs": theirs}, staged)


def test_a_symlinked_parent_is_never_followed(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "outside", {"x": "secret"})
    base = _tree(tmp_path / "base", {"d/x": "1"})
    theirs = _tree(tmp_path / "theirs", {"d/x": "1"})
    ours = _tree(tmp_path / "ours", {})
    os.symlink(outside, ours / "d")
    with pytest.raises(Unsplittable):
        check_parents(["d/x"], {"base": base, "ours": ours, "theirs": theirs},
                      _tree(tmp_path / "staged", {}))


def test_only_the_paths_are_merged_and_spliced_into_the_staged_upper(tmp_path: Path) -> None:
    base = _tree(tmp_path / "base", {"conf/a.json": '{"a": 1, "b": 1}\n', "keep.txt": "k\n",
                                     "gone.txt": "g\n"})
    theirs = _tree(tmp_path / "theirs", {"conf/a.json": '{"a": 1, "b": 2}\n', "keep.txt": "k2\n",
                                         "gone.txt": "g\n"})
    # ours as of the stop: a.json edited after the staging, gone.txt deleted
    ours = _tree(tmp_path / "ours", {"conf/a.json": '{"a": 5, "b": 1}\n', "keep.txt": "k\n"})
    # the staged upper (against ours before the edit): theirs' a.json and keep.txt
    staged = _tree(tmp_path / "staged", {"conf/a.json": '{"a": 1, "b": 2}\n',
                                         "keep.txt": "k2\n"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rep = merge_paths(base, ours, theirs, staged, scratch, ["conf/a.json", "gone.txt"],
                      policy=None, on_conflict="fail")
    assert json.loads((staged / "conf/a.json").read_text()) == {"a": 5, "b": 2}
    assert (staged / "keep.txt").read_text() == "k2\n"        # untouched: not among the paths
    assert not os.path.lexists(staged / "gone.txt")           # deleted by ours, kept deleted
    assert {f["path"] for f in rep["files"]} <= {"conf/a.json", "gone.txt"}
