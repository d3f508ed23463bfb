"""Layer extraction: overlay-ready form and preserved metadata."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys
from volmerge.runtime.errors import BadInput
from volmerge.runtime.images import ImageStore
from volmerge.runtime.tarsafe import extract_layer

from .builders import MTIME, E, compress, layer_tar, sha


def _extract(tmp_path: Path, entries: list[E], how: str = "none") -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(compress(layer_tar(entries), how))
    dest = tmp_path / "out"
    dest.mkdir()
    got = extract_layer(blob, dest)
    assert got.diff_id == sha(layer_tar(entries))
    return dest


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_compressions_give_the_same_tree(tmp_path: Path, how: str) -> None:
    d = _extract(tmp_path, [E("a", data=b"x" * 5000), E("d", "dir"), E("d/b", data=b"y")], how)
    assert (d / "a").read_bytes() == b"x" * 5000
    assert (d / "d" / "b").read_bytes() == b"y"


def test_metadata_is_preserved(tmp_path: Path) -> None:
    d = _extract(tmp_path, [
        E("./", "dir", mode=0o755),
        E("etc", "dir", mode=0o750, uid=3, gid=4),
        E("etc/conf", data=b"c", mode=0o4751, uid=1000, gid=1001,
          xattrs={"user.note": b"hi", "security.capability": b"\x01\x00\x00\x02" + b"\x00" * 16}),
        E("etc/hard", "hardlink", link="etc/conf"),
        E("etc/sym", "symlink", link="/etc/conf", uid=5, gid=6),
        E("pipe", "fifo", mode=0o640),
        E("ro", "dir", mode=0o555),
        E("ro/f", data=b"z", mode=0o400),
    ])
    st = os.lstat(d / "etc" / "conf")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4751, 1000, 1001)
    assert st.st_mtime == MTIME and st.st_nlink == 2
    assert os.lstat(d / "etc" / "hard").st_ino == st.st_ino
    assert os.getxattr(d / "etc" / "conf", "user.note") == b"hi"
    assert os.getxattr(d / "etc" / "conf", "security.capability")[:4] == b"\x01\x00\x00\x02"
    sst = os.lstat(d / "etc" / "sym")
    assert os.readlink(d / "etc" / "sym") == "/etc/conf" and (sst.st_uid, sst.st_gid) == (5, 6)
    est = os.lstat(d / "etc")
    assert (stat.S_IMODE(est.st_mode), est.st_uid, est.st_gid, est.st_mtime) == (0o750, 3, 4, MTIME)
    assert stat.S_ISFIFO(os.lstat(d / "pipe").st_mode)
    assert stat.S_IMODE(os.lstat(d / "ro").st_mode) == 0o555
    assert os.lstat(d).st_mtime == MTIME


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    d = _extract(tmp_path, [
        E("etc", "dir"), E("etc/.wh.motd"), E("var", "dir"), E("var/.wh..wh..opq"),
        E("var/new", data=b"n"), E(".wh..wh.plnk", "dir"),
    ])
    st = os.lstat(d / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (d / "etc" / ".wh.motd").exists()
    assert os.getxattr(d / "var", "trusted.overlay.opaque") == b"y"
    assert not (d / "var" / ".wh..wh..opq").exists()
    assert not (d / ".wh..wh.plnk").exists()


def test_overlay_xattrs_from_the_archive_are_dropped(tmp_path: Path) -> None:
    d = _extract(tmp_path, [E("a", "dir", xattrs={"trusted.overlay.redirect": b"/etc", "user.ok": b"1"})])
    assert os.listxattr(d / "a") == ["user.ok"]


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    d = _extract(tmp_path, [
        E("x", data=b"old"), E("x", "dir"), E("x/y", data=b"in"), E("x", data=b"file again"),
        E("s", "symlink", link="elsewhere"), E("s", data=b"now a file"),
    ])
    assert (d / "x").read_bytes() == b"file again"
    assert (d / "s").read_bytes() == b"now a file"


def test_missing_parents_are_created(tmp_path: Path) -> None:
    d = _extract(tmp_path, [E("a/b/c", data=b"deep")])
    assert (d / "a" / "b" / "c").read_bytes() == b"deep"


def test_image_mounts_as_overlay_with_whiteouts(images: ImageStore, tmp_path: Path) -> None:
    from .builders import image_files, write_dir

    base = layer_tar([E("etc", "dir"), E("etc/motd", data=b"m"), E("etc/keep", data=b"k"),
                      E("var", "dir"), E("var/old", data=b"o")])
    top = layer_tar([E("etc", "dir"), E("etc/.wh.motd"), E("var", "dir"), E("var/.wh..wh..opq"),
                     E("var/new", data=b"n")])
    img = images.load(write_dir(image_files([base, top]), tmp_path / "layout"))
    assert img.tags == ["localhost/test:1"] and len(img.lower_dirs()) == 2
    assert img.lower_dirs()[0] == str(img.layers[1].path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rsys.mount_overlay(mnt, img.lower_dirs(), readonly=True)
    try:
        assert sorted(os.listdir(mnt / "etc")) == ["keep"]
        assert sorted(os.listdir(mnt / "var")) == ["new"]
    finally:
        rsys.umount(mnt)


def test_bad_entry_raises_bad_input(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(layer_tar([E("../x", data=b"1")]))
    (tmp_path / "out").mkdir()
    with pytest.raises(BadInput, match=r"\.\."):
        extract_layer(blob, tmp_path / "out")


def test_entry_nested_beyond_path_max_is_bad_input(tmp_path: Path) -> None:
    """A hostile layer nesting 2,100 directories (a 4,200-byte path): one
    clean error instead of an ENAMETOOLONG traceback (issue 14, 4)."""
    name = "/".join(["d"] * 2100)
    with pytest.raises(BadInput, match="nested too deep") as exc:
        _extract(tmp_path, [E(name, data=b"x")])
    assert len(str(exc.value)) < 300
    from volmerge.runtime import fsutil

    fsutil.rmtree(tmp_path / "out")  # the half-filled tree: 2,000 levels


@pytest.mark.parametrize("entry", [E("f", data=b"x", uid=2**33), E("f", data=b"x", gid=2**32 - 1),
                                   E("f", data=b"x", mtime=2**63)])
def test_owner_or_mtime_out_of_range_is_bad_input(tmp_path: Path, entry: E) -> None:
    """Numbers the archive format holds but the kernel does not (pax or
    base-256 fields): one clean error, not an OverflowError traceback."""
    with pytest.raises(BadInput, match="out of range"):
        _extract(tmp_path, [entry])
