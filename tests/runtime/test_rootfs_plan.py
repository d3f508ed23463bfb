"""The container root's mount plan (runtime/rootfs.py) without root: which
overlays are mounted, with which layers in which order, what is squashed
when an image has more layers than one overlay takes.  The kernel calls are
recorded (tests/sysrec.py); test_spec_rootfs.py mounts the same for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sysrec import recording
from volmerge.runtime import rootfs
from volmerge.runtime import sys as rsys

pytestmark = pytest.mark.unit


def test_the_root_is_one_overlay_of_the_layers_over_the_container_layer(tmp_path: Path) -> None:
    cdir = tmp_path / "c"
    with recording() as rec:
        target = rootfs.mount_rootfs(cdir, ["/l/top", "/l/bottom"], volatile=True)
        again = rootfs.mount_rootfs(cdir, ["/l/top", "/l/bottom"])  # mounted: nothing more
    upper, work, mnt = rootfs.layout(cdir)
    assert target == again == mnt
    [call] = rec.calls
    assert call.name == "mount_overlay"
    assert call.args == (str(mnt), ("/l/top", "/l/bottom"), str(upper), str(work))
    assert call.kw() == {"readonly": False, "extra": (("volatile", None),)}
    # the overlay's root shows the upper's mode: 0755, whatever the umask
    assert (upper.stat().st_mode & 0o777, work.stat().st_mode & 0o777) == (0o755, 0o700)


def test_unmounting_the_root_takes_what_is_mounted_below_it_first(tmp_path: Path) -> None:
    cdir = tmp_path / "c"
    with recording() as rec:
        mnt = rootfs.mount_rootfs(cdir, ["/l/one", "/l/two"])
        (mnt / "data").mkdir()
        rsys.mount("/src", mnt / "data", None, rsys.MS_BIND)
        rec.calls.clear()
        rootfs.umount_rootfs(cdir)
    assert [c.args for c in rec.calls] == [(str(mnt / "data"), rsys.MNT_DETACH),
                                           (str(mnt), rsys.MNT_DETACH)]
    assert rec.mounted == []


def test_no_layer_is_bad_input(tmp_path: Path) -> None:
    from volmerge.runtime.errors import BadInput

    with recording() as rec, pytest.raises(BadInput):
        rootfs.mount_rootfs(tmp_path / "c", [])
    assert rec.calls == []


def _expand(lowers: tuple[str, ...], made: dict[str, tuple[str, ...]]) -> list[str]:
    """The image layers behind a list of lowers (squashed dirs expanded)."""
    out: list[str] = []
    for low in lowers:
        out += _expand(made[low], made) if low in made else [low]
    return out


def test_more_layers_than_one_overlay_takes_are_squashed_once_bottom_first(
        tmp_path: Path) -> None:
    limit = rsys.overlay_max_lowers()
    layers = [f"/l/{i:04d}" for i in range(2 * limit + 201)]  # top-most first
    cdir = tmp_path / "c"
    cdir.mkdir()
    with recording() as rec:
        rootfs.mount_rootfs(cdir, layers)
    overlays = rec.named("mount_overlay")
    *squashes, root = overlays
    # each squash mounts a read-only view and copies it out; bottom layers first
    assert [c.kw()["readonly"] for c in squashes] == [True] * len(squashes)
    assert all(len(c.args[1]) <= limit for c in overlays)
    assert len(root.args[1]) == limit and root.args[1][-1] == str(cdir / "squashed")
    assert root.args[1][: limit - 1] == tuple(layers[: limit - 1])
    # what each squash produced: the first one a part that the second one lists
    [bottom, rest] = squashes
    [part] = [low for low in rest.args[1] if "squash-part-" in low]
    made = {str(cdir / "squashed"): rest.args[1], part: bottom.args[1]}
    assert _expand(root.args[1], made) == layers  # nothing lost, order kept
    assert [c.name for c in rec.calls if c.name == "umount"] == ["umount"] * len(squashes)
    assert sorted(p.name for p in cdir.iterdir()) == ["bundle", "squashed", "upper", "work"]

    # the squashed bottom is kept: the next start mounts it without squashing again
    with recording() as rec:
        rootfs.mount_rootfs(cdir, layers)
    assert [c.args[1] for c in rec.calls] == [root.args[1]]
