"""The changes since a serving copy (upgrade/servingcopy.py), on plain
directories: the live layer's ctimes against the copy's stamp, then the
candidates compared as the volume's diff compares them.  No root, but for
the whiteout (a 0/0 device: mknod)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from volmerge.runtime.fsutil import dir_size
from volmerge.upgrade.servingcopy import copy_name, diff_tops

# no root, but for the whiteout's test (mknod): the others run as any user
# (tests/test_unit_unprivileged.py)
unit = pytest.mark.unit


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _stamp(tmp: Path) -> int:
    (tmp / "stamp").touch()
    return os.lstat(tmp / "stamp").st_ctime_ns


def _stacks(tmp: Path) -> tuple[list[Path], list[Path]]:
    """A shared lower layer; the live layer ``b`` and its copy ``a``."""
    lower, b = tmp / "lower", tmp / "live"
    _write(lower, {"w/a": "a", "w/b": "b", "seed.txt": "s"})
    _write(b, {"f.txt": "1", "g.txt": "g", "gone.txt": "x", "d/e.txt": "e"})
    shutil.copytree(b, tmp / "copy", symlinks=True)
    time.sleep(0.03)  # past the clock tick: a ctime equal to the stamp counts as changed
    return [lower, tmp / "copy"], [lower, b]


def _changes(a: list[Path], b: list[Path], since: int) -> list[tuple[str, str]]:
    return [(c.path, c.kind) for c in diff_tops(a, b, since)]


@unit
def test_only_what_changed_since_the_stamp_is_a_change(tmp_path: Path) -> None:
    a, b = _stacks(tmp_path)
    since = _stamp(tmp_path)
    live = b[-1]
    (live / "f.txt").write_text("2")           # new content
    os.chmod(live / "g.txt", 0o644)             # a new ctime, the same content and mode
    (live / "gone.txt").unlink()                # an upper-only file deleted: no whiteout
    (live / "d" / "new.txt").write_text("n")    # the directory's only change: its entries
    assert _changes(a, b, since) == [("d/new.txt", "added"), ("f.txt", "modified"),
                                     ("gone.txt", "deleted")]


@unit
def test_an_entry_before_the_stamp_that_the_copy_holds_is_not_read(tmp_path: Path) -> None:
    """The stamp prunes: a file older than it is taken as the copy's (here
    the copy was altered behind its back to show it is not read); a clock
    gone back (``since`` -1) compares every entry."""
    a, b = _stacks(tmp_path)
    (a[-1] / "g.txt").write_text("other")
    since = _stamp(tmp_path)
    assert _changes(a, b, since) == []
    assert _changes(a, b, -1) == [("g.txt", "modified")]


@unit
def test_a_file_renamed_since_the_stamp_is_two_changes(tmp_path: Path) -> None:
    a, b = _stacks(tmp_path)
    since = _stamp(tmp_path)
    os.rename(b[-1] / "g.txt", b[-1] / "h.txt")  # the kernel sets the moved inode's ctime
    assert _changes(a, b, since) == [("g.txt", "deleted"), ("h.txt", "added")]


def test_a_whiteout_over_a_lower_directory_deletes_its_subtree(tmp_path: Path) -> None:
    from volmerge.runtime.overlayfmt import make_whiteout, set_opaque

    a, b = _stacks(tmp_path)
    since = _stamp(tmp_path)
    make_whiteout(b[-1] / "w")
    (b[-1] / "seed.txt").write_text("t")
    assert _changes(a, b, since) == [("seed.txt", "modified"),
                                     ("w", "deleted"), ("w/a", "deleted"), ("w/b", "deleted")]
    os.unlink(b[-1] / "w")
    (b[-1] / "w").mkdir()
    set_opaque(b[-1] / "w")  # an opaque directory: the lower entries hidden
    assert _changes(a, b, since) == [("seed.txt", "modified"), ("w/a", "deleted"),
                                     ("w/b", "deleted")]


@unit
def test_the_copys_name_is_the_upgrades_own() -> None:
    assert copy_name("20261205-abc123", "data") == "upgrade-20261205-abc123-copy-data"


@unit
def test_the_live_layer_is_counted_until_it_passes_the_limit(tmp_path: Path) -> None:
    _write(tmp_path, {"a": "x" * 100, "d/b": "y" * 50, "d/e/c": "z" * 25})
    os.symlink("a", tmp_path / "link")
    assert dir_size(str(tmp_path), apparent=True, stop_above=1000) == 175
    assert 100 < dir_size(str(tmp_path), apparent=True, stop_above=100) <= 175   # stops once past the limit
    assert dir_size(str(tmp_path / "missing"), apparent=True, stop_above=10) == 0
