"""A container's start prepared ahead of it (Lifecycle.prestart): the root
mounted before the start, used by it, and torn down by every path that
tears a container down when the start never comes (unprestart, teardown,
rm, the reconciliation of a preparer that died)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from volmerge.runtime import sys as rsys
from volmerge.runtime.errors import Conflict
from volmerge.runtime.options import RunOptions


def _mounted(c) -> bool:  # type: ignore[no-untyped-def]
    return rsys.is_mountpoint(c.rootfs)


@pytest.fixture
def created(engine, busybox_rootfs):  # type: ignore[no-untyped-def]
    return engine.create(RunOptions(image=str(busybox_rootfs), command=["sleep", "1000"]))


def test_prestart_mounts_the_root_and_the_start_uses_it(engine, created) -> None:  # type: ignore[no-untyped-def]
    c = engine.prestart(created.id)
    assert _mounted(c) and c.state == "created" and c.owner_pid == os.getpid()
    assert engine.get(c.id).state == "created"  # its owner lives: nothing reconciled
    engine.start(c.id)
    c = engine.get(c.id)
    assert c.state == "running" and c.owner_pid != os.getpid()  # the supervisor's run now
    assert engine.exec(c.id, ["true"]) == 0
    engine.stop(c.id, timeout=1)
    assert not _mounted(engine.get(c.id))
    engine.remove(c.id)


def test_prestart_spawns_the_supervisor_the_start_takes(engine, created) -> None:  # type: ignore[no-untyped-def]
    """The supervisor is spawned by prestart (its interpreter starts before
    the switch); the start gives it the go instead of spawning one."""
    engine.prestart(created.id)
    ahead = engine.lifecycle.ahead[created.id]
    assert _alive(ahead.pid)
    engine.start(created.id)
    c = engine.get(created.id)
    assert created.id not in engine.lifecycle.ahead
    # it double-forks in the session it started: the run's owner is its child
    assert c.state == "running" and os.getsid(c.owner_pid) == ahead.pid
    engine.remove(c.id, force=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_unprestart_cancels_the_supervisor_spawned_ahead(engine, created) -> None:  # type: ignore[no-untyped-def]
    engine.prestart(created.id)
    ahead = engine.lifecycle.ahead[created.id]
    engine.unprestart(created.id)
    assert created.id not in engine.lifecycle.ahead
    assert not _alive(ahead.pid)  # cancelled: it ended (and was waited for)
    engine.remove(created.id)


def test_unprestart_tears_it_down_and_the_start_still_works(engine, created) -> None:  # type: ignore[no-untyped-def]
    engine.prestart(created.id)
    engine.unprestart(created.id)
    engine.unprestart(created.id)  # idempotent
    c = engine.get(created.id)
    assert not _mounted(c) and c.owner_pid is None and c.state == "created"
    engine.start(c.id)
    assert engine.get(c.id).state == "running"
    engine.remove(c.id, force=True)


def test_rm_of_a_prestarted_container_leaves_no_mount(engine, created) -> None:  # type: ignore[no-untyped-def]
    c = engine.prestart(created.id)
    engine.remove(c.id)
    assert not c.dir.exists()


def test_teardown_undoes_it(engine, created) -> None:  # type: ignore[no-untyped-def]
    c = engine.prestart(created.id)
    engine.teardown(c)
    assert not _mounted(c)
    engine.remove(c.id)


def test_only_a_created_container_is_prestarted(engine, created) -> None:  # type: ignore[no-untyped-def]
    engine.start(created.id)
    with pytest.raises(Conflict, match="only a created container"):
        engine.prestart(created.id)
    engine.stop(created.id, timeout=1)
    with pytest.raises(Conflict, match="exited"):
        engine.prestart(created.id)
    assert not _mounted(engine.get(created.id))
    engine.remove(created.id)


def _prestart_and_die(created, store) -> None:  # type: ignore[no-untyped-def]
    code = textwrap.dedent(f"""
        import os, signal
        from volmerge.runtime.containers import Engine
        from volmerge.runtime.store import Store
        Engine(Store({str(store.root)!r}), runtime={created.runtime!r}).prestart({created.id!r})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr


def test_a_preparer_killed_before_the_start_is_reconciled(engine, created, store) -> None:  # type: ignore[no-untyped-def]
    """The process that prepared the start dies (SIGKILL): the next look at
    the container (ps, get) unmounts the root; the container stays created
    and starts as any other."""
    _prestart_and_die(created, store)
    assert _mounted(created) and engine.records.lookup(created.id).owner_pid
    (c,) = [x for x in engine.list(all=True) if x.id == created.id]
    assert not _mounted(c) and c.state == "created" and c.owner_pid is None and not c.error
    engine.start(c.id)
    assert engine.get(c.id).state == "running"
    engine.remove(c.id, force=True)


def test_a_preparer_killed_before_the_start_is_swept_when_the_store_opens(  # type: ignore[no-untyped-def]
        engine, created, store) -> None:
    from volmerge.runtime.store import Store

    _prestart_and_die(created, store)
    assert _mounted(created)
    Store(store.root).close()  # any next command opens the store
    c = engine.records.lookup(created.id)
    assert not _mounted(c) and c.state == "created" and c.owner_pid is None
    engine.prestart(c.id)  # a live preparer's is left alone
    Store(store.root).close()
    assert _mounted(c)
    engine.remove(c.id)
