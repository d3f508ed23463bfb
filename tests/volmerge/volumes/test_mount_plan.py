"""Which overlay a volume is mounted as (volmerge/volumes/manager.py), without
root: the frozen layers top-most first over the live upper, snapshots as
read-only views, a volume in use mounted again by the next command after a
reboot.  The kernel calls are recorded (tests/sysrec.py); test_scenario.py
and test_swap.py mount the same for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sysrec import recording
from volmerge.runtime.store import Store
from volmerge.volumes import VolumeManager

pytestmark = pytest.mark.unit


def _overlays(rec) -> list[tuple]:  # type: ignore[no-untyped-def]
    """(target, lower dirs as layer ids, upper id, readonly) of each overlay mounted."""
    def lid(p: str | None) -> str | None:
        return None if p is None else Path(p).parent.name
    return [(c.args[0], tuple(lid(x) for x in c.args[1]), lid(c.args[2]), c.kw()["readonly"])
            for c in rec.named("mount_overlay")]


def test_frozen_layers_are_stacked_top_most_first_over_the_live_layer(root: Path) -> None:
    with recording() as rec:
        st = Store(root)
        try:
            vm = VolumeManager(st)
            vm.create("v")
            merged = str(vm.pool.merged("v"))
            vm.attach("v", "c1", None)
            vm.detach("v", "c1")
            first = vm.snapshot("v", "one")
            second = vm.snapshot("v")
            m = vm.pool.read("v")
            vm.attach("v", "c1", None)
            vm.attach("v", "c2", None, readonly=True)  # mounted already: shared
            with vm.view("v", at="one") as view:
                pass
            vm.detach("v", "c1")
            vm.detach("v", "c2")
        finally:
            st.close()
    assert m is not None and [first.layer, second.layer] == [g.layer for g in m.generations]
    assert _overlays(rec) == [
        (merged, (m.seed,), first.layer, False),  # the first live layer over the seed
        (merged, (second.layer, first.layer, m.seed), m.live, False),
        (str(view), (first.layer, m.seed), None, True),
    ]
    # unmounted when its last user goes, and the view on leaving the block
    assert [c.args[0] for c in rec.named("umount")] == [merged, str(view), merged]
    assert rec.mounted == []


def test_a_volume_in_use_is_mounted_again_by_the_next_command_after_a_reboot(
        root: Path) -> None:
    with recording():
        st = Store(root)
        try:
            vm = VolumeManager(st)
            vm.attach("v", "c1", None)
            vm.create("unused")
            m = vm.pool.read("v")
            merged = str(vm.pool.merged("v"))
        finally:
            st.close()
    with recording() as rec:  # a fresh mount table: nothing is mounted
        st = Store(root)
        try:
            VolumeManager(st)
        finally:
            st.close()
    assert m is not None
    assert _overlays(rec) == [(merged, (m.seed,), m.live, False)]  # not "unused"
