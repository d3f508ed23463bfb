"""Small files of a layer are written by threads (runtime/tarwrite.py) while
the extraction reads on: what replaces, removes or hardlinks an entry waits
for them, their errors reach the caller, and they never outlive the
extraction."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from volmerge.runtime.errors import BadInput
from volmerge.runtime.tarsafe import extract_layer

from .builders import MTIME, E, layer_tar


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tarsafe-write"]


def _extract(tmp_path: Path, entries: list[E]) -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(layer_tar(entries))
    out = tmp_path / "out"
    out.mkdir()
    try:
        extract_layer(blob, out)
    finally:
        assert _writers() == []
    return out


def _many(d: str, n: int = 300) -> list[E]:
    return [E(f"{d}/f{i}", data=b"%d" % i, mode=0o640, uid=i % 7, gid=3) for i in range(n)]


def test_queued_files_land_with_their_metadata(tmp_path: Path) -> None:
    out = _extract(tmp_path, [E("d", "dir"), *_many("d")])
    for i in (0, 150, 299):
        st = os.lstat(out / "d" / f"f{i}")
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o640, i % 7, 3, MTIME)
        assert (out / "d" / f"f{i}").read_bytes() == b"%d" % i


def test_a_directory_replaced_by_a_symlink_takes_its_queued_files_along(
        tmp_path: Path) -> None:
    """Files queued under ``d`` are written (or the layer fails) before ``d``
    is removed for the symlink: none lands through it, outside the layer."""
    outside = tmp_path / "outside"
    outside.mkdir()
    out = _extract(tmp_path, [E("d", "dir"), *_many("d"), E("d", "symlink", link=str(outside))])
    assert os.listdir(outside) == []
    assert os.readlink(out / "d") == str(outside)


def test_replaced_and_hardlinked_files_wait_for_the_queue(tmp_path: Path) -> None:
    out = _extract(tmp_path, [*_many("a"), E("a/f5", data=b"again"), E("h", "hardlink", link="a/f7"),
                              E("a", "dir"), E("a/.wh.f9")])
    assert (out / "a" / "f5").read_bytes() == b"again"
    assert os.lstat(out / "h").st_ino == os.lstat(out / "a" / "f7").st_ino
    assert (out / "h").read_bytes() == b"7"
    assert os.lstat(out / "a" / "f9").st_rdev == os.makedev(0, 0)


def test_an_error_of_a_writer_is_the_extractions(tmp_path: Path) -> None:
    # an xattr value larger than the kernel takes (E2BIG), set by a writer thread
    entries = [*_many("d", 50), E("d/big", data=b"x", xattrs={"user.big": b"v" * (70 << 10)}),
               *_many("e", 50)]
    with pytest.raises(BadInput, match="cannot set xattr 'user.big'"):
        _extract(tmp_path, entries)
