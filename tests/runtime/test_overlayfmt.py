"""runtime.overlayfmt: the overlay format's one home."""

from __future__ import annotations

import os
import stat

import pytest

from volmerge.runtime import overlayfmt


@pytest.mark.unit
@pytest.mark.parametrize("name", ["a", "file.txt", ".hidden", "..x", "wh"])
def test_tar_whiteout_round_trip(name):
    entry = overlayfmt.tar_whiteout_name(name)
    assert entry == ".wh." + name
    assert overlayfmt.tar_marker(entry) == overlayfmt.TarMarker("whiteout", name)


@pytest.mark.unit
def test_tar_markers():
    assert overlayfmt.tar_marker("plain") is None
    assert overlayfmt.tar_marker(".wh..wh..opq") == overlayfmt.TarMarker("opaque")
    assert overlayfmt.tar_marker(".wh..wh.plnk").kind == "meta"
    for bad in (".wh.", ".wh..", ".wh..."):
        with pytest.raises(ValueError):
            overlayfmt.tar_marker(bad)
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            overlayfmt.tar_whiteout_name(bad)


@pytest.mark.unit
def test_is_whiteout_on_stat_values(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    assert not overlayfmt.is_whiteout(os.lstat(f))
    st = os.stat_result((stat.S_IFCHR | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": 0})
    assert overlayfmt.is_whiteout(st)
    dev = os.stat_result((stat.S_IFCHR | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": os.makedev(1, 3)})
    assert not overlayfmt.is_whiteout(dev)


@pytest.mark.unit
def test_overlay_xattrs_are_recognised():
    assert overlayfmt.is_overlay_xattr("trusted.overlay.opaque")
    assert overlayfmt.is_overlay_xattr("trusted.overlay.redirect")
    assert not overlayfmt.is_overlay_xattr("user.overlay.opaque")
    assert overlayfmt.wants_opaque({"trusted.overlay.opaque": b"y"})
    assert not overlayfmt.wants_opaque({})


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted.* xattrs need root")
def test_on_disk_round_trip(tmp_path):
    overlayfmt.make_whiteout("gone", dir_fd=os.open(tmp_path, os.O_RDONLY))
    st = os.lstat(tmp_path / "gone")
    assert overlayfmt.is_whiteout(st) and stat.S_IMODE(st.st_mode) == 0
    d = tmp_path / "d"
    d.mkdir()
    assert not overlayfmt.is_opaque(d)
    overlayfmt.set_opaque(d)
    assert overlayfmt.is_opaque(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert overlayfmt.is_opaque(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod, trusted.* xattrs and mounts need root")
def test_shadow_makes_the_upper_show_exactly_itself(tmp_path):
    from volmerge.runtime import sys as rsys

    lower, upper, view = tmp_path / "lower", tmp_path / "upper", tmp_path / "view"
    for p in ("a", "b/x", "c/deep/f"):
        (lower / p).parent.mkdir(parents=True, exist_ok=True)
        (lower / p).write_text("lower")
    (upper / "b").mkdir(parents=True)
    (upper / "b" / "y").write_text("upper")
    (upper / "d").write_text("upper")
    view.mkdir()
    overlayfmt.shadow(upper, lower)
    rsys.mount_overlay(view, [str(upper), str(lower)], readonly=True)
    try:
        seen = sorted(str(p.relative_to(view)) for p in view.rglob("*"))
    finally:
        rsys.umount(view, rsys.MNT_DETACH)
    assert seen == ["b", "b/y", "d"]
