"""Hostile trees: nothing outside the trees is ever read or written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.strategies.errors import BadInput
from volmerge.strategies.tree import merge_trees

from .treeutil import Link, read, three


@pytest.fixture
def sentinel(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A secret outside the trees, with an old atime we can watch."""
    p = tmp_path / "secret"
    p.write_bytes(b"top secret\n")
    os.utime(p, (1_000_000, 1_000_000))
    yield p
    assert p.read_bytes() == b"top secret\n"


def _untouched(p: Path) -> None:
    st = os.stat(p)
    assert st.st_atime == 1_000_000 and st.st_mtime == 1_000_000
    assert p.read_bytes() == b"top secret\n"


@pytest.mark.parametrize("mode", ["full", "upper"])
def test_symlinks_out_are_never_followed(tmp_path: Path, sentinel: Path, mode: str) -> None:
    s = str(sentinel)
    b, o, t = three(tmp_path, {"f": Link(s), "d": Link(str(tmp_path))},
                    {"f": Link(s), "d": Link(str(tmp_path)), "g": Link("/etc/shadow")},
                    {"f": Link("/etc/shadow"), "d": {"x": b"1"}, "g": Link("/etc/shadow")})
    merge_trees(b, o, t, tmp_path / "out", mode=mode, on_conflict="keep-both")
    out = read(tmp_path / "out")
    assert out["f"] == Link("/etc/shadow")
    assert b"top secret" not in repr(out).encode()
    st = os.stat(sentinel)
    assert st.st_atime == 1_000_000
    _untouched(sentinel)


def test_symlinked_file_changed_on_both_sides_is_not_read(tmp_path: Path, sentinel: Path) -> None:
    b, o, t = three(tmp_path, {"c.json": b"{}"}, {"c.json": Link(str(sentinel))}, {"c.json": b'{"a": 1}'})
    merge_trees(b, o, t, tmp_path / "out", on_conflict="keep-both")
    assert read(tmp_path / "out") == {"c.json": Link(str(sentinel)), "c.json.volmerge-new": b'{"a": 1}'}
    _untouched(sentinel)


def test_device_files_are_recreated_never_opened(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {}, {}, {})
    os.mknod(t / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(t / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # reading would never end
    os.mkfifo(o / "fifo")  # opening would block forever
    os.mknod(b / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    os.mknod(o / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    merge_trees(b, o, t, tmp_path / "out")
    out = read(tmp_path / "out")
    assert out["null"] == ("special", stat.S_IFCHR, os.makedev(1, 3))
    assert out["fifo"] == ("special", stat.S_IFIFO, 0)
    assert out["zero"] == ("special", stat.S_IFCHR, os.makedev(1, 5))


def test_unreadable_file_is_a_clean_error(tmp_path: Path) -> None:
    """Without CAP_DAC_OVERRIDE a mode-000 file cannot be read: one-line
    error, exit 2, nothing written."""
    b, o, t = three(tmp_path, {"f": b"1"}, {"f": b"1"}, {"f": b"1"})
    os.chmod(o / "f", 0)
    out = tmp_path / "out"
    p = subprocess.run(
        ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
         "--bounding-set=-dac_override,-dac_read_search",
         sys.executable, "-m", "volmerge", "merge", str(b), str(o), str(t), "-o", str(out)],
        capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("volmerge: error: cannot read ours/f") and p.stderr.count("\n") == 1
    assert not out.exists() and not [x for x in os.listdir(tmp_path) if "volmerge-tmp" in x]


def test_names_with_newlines(tmp_path: Path) -> None:
    n = "evil\nname"
    b, o, t = three(tmp_path, {n: b"a\n"}, {n: b"a\n"}, {n: b"b\n", "x\n": {"y\n": b"z"}})
    merge_trees(b, o, t, tmp_path / "out")
    assert read(tmp_path / "out") == {n: b"b\n", "x\n": {"y\n": b"z"}}


def test_output_symlink_is_refused(tmp_path: Path, sentinel: Path) -> None:
    b, o, t = three(tmp_path, {"a": b"1"}, {"a": b"1"}, {"a": b"2"})
    os.symlink(sentinel, tmp_path / "out")
    with pytest.raises(BadInput):
        merge_trees(b, o, t, tmp_path / "out")
    _untouched(sentinel)
