"""runtime.sys: the overlay options of mount(2), the fallback of kernels
without the new mount API (``lowerdir+``)."""

from __future__ import annotations

from volmerge.runtime import sys as rsys


def test_legacy_options_flag_is_a_bare_name():
    # a flag (value None) was written "volatile=None", which overlay refuses
    assert rsys.legacy_overlay_options(["a", "b"], "u", "w", {"volatile": None}) == (
        "lowerdir=a:b,upperdir=u,workdir=w,volatile")
    assert rsys.legacy_overlay_options(["a", "b"], None, None, None) == "lowerdir=a:b"
    assert rsys.legacy_overlay_options(["a"], "u", "w", {"redirect_dir": "on"}) == (
        "lowerdir=a,upperdir=u,workdir=w,redirect_dir=on")


def test_legacy_mount_with_a_flag(tmp_path):
    """The mount(2) path with ``volatile`` (rootfs.py's option) mounts."""
    lower, upper, work, view = (tmp_path / n for n in ("lower", "upper", "work", "view"))
    for d in (lower, upper, work, view):
        d.mkdir()
    (lower / "f").write_text("lower")
    rsys._mount_overlay_legacy(view, [str(lower)], str(upper), str(work), False,
                               {"volatile": None})
    try:
        (view / "g").write_text("upper")
        seen = sorted(p.name for p in view.iterdir())
    finally:
        rsys.umount(view, rsys.MNT_DETACH)
    assert seen == ["f", "g"]
    assert (upper / "g").read_text() == "upper"
