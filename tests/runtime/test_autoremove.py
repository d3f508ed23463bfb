"""``run -d --rm``: a detached container made with ``--rm`` is removed once
it exits on its own (its supervisor does it, runtime/removal.py) or is
stopped by ``stop`` (or killed), as Docker's; ``restart`` and the stop of an
upgrade keep it (Lifecycle.stop without ``autoremove``)."""

from __future__ import annotations

import time

import pytest

from volmerge.runtime.errors import NotDone, NotFound
from volmerge.runtime.options import RunOptions


def _gone(engine, cid: str, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            engine.records.lookup(cid)
        except NotFound:
            return True
        time.sleep(0.02)
    return False


def _rm_container(engine, busybox_rootfs, command: list[str]):  # type: ignore[no-untyped-def]
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=command, detach=True,
                                 rm=True, network="none"))
    engine.start(c.id)
    return c


def test_a_detached_rm_container_is_removed_when_it_exits(engine, busybox_rootfs, store):
    c = _rm_container(engine, busybox_rootfs, ["/bin/sh", "-c", "exit 3"])
    assert _gone(engine, c.id), "the --rm container is still recorded after its exit"
    assert not c.dir.exists()
    assert not (store.root / "locks" / f"container-{c.id}.lock").exists()
    with pytest.raises(NotFound):
        engine.get(c.name)


def test_stop_removes_it_restart_keeps_it(engine, busybox_rootfs):
    c = _rm_container(engine, busybox_rootfs, ["/bin/sh", "-c", "trap 'exit 0' TERM; "
                                               "while :; do sleep 0.05; done"])
    engine.restart(c.id, timeout=5)
    assert engine.get(c.id).state == "running"  # a restart is no exit of its own
    engine.stop(c.id, timeout=5)  # the library's stop (an upgrade's): kept, stopped
    assert engine.get(c.id).state == "exited"
    engine.start(c.id)
    engine.stop(c.id, timeout=5, autoremove=True)  # the `stop` command's
    with pytest.raises(NotFound):
        engine.records.lookup(c.id)
    assert not c.dir.exists()


def test_kill_removes_it_and_wait_says_the_code_went_with_it(engine, busybox_rootfs):
    c = _rm_container(engine, busybox_rootfs, ["sleep", "60"])
    engine.kill(c.id, "KILL")
    assert _gone(engine, c.id), "a killed --rm container stays"
    c2 = _rm_container(engine, busybox_rootfs, ["/bin/sh", "-c", "sleep 0.3; exit 5"])
    with pytest.raises(NotDone, match="removed when it exited"):
        engine.wait(c2.id, timeout=20)
    assert _gone(engine, c2.id)
