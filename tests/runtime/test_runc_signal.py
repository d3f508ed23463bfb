"""How the runc executor signals a container (runtime/executors/runc.py):
straight to its first process through a pidfd when that process is shown to
be the container's (in its cgroup), by ``runc kill`` otherwise, and never
to a process that merely has the recorded pid."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from volmerge.runtime.containers import Engine
from volmerge.runtime.executors.runc import RuncExecutor
from volmerge.runtime.options import RunOptions


@pytest.fixture
def runc_engine(store):
    eng = Engine(store, runtime="runc")
    yield eng
    for c in eng.list(all=True):
        eng.remove(c.id, force=True)


def _exited_with(eng: Engine, cid: str, code: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while eng.get(cid).live:
        assert time.monotonic() < deadline, "the container did not exit"
        time.sleep(0.02)
    assert eng.get(cid).exit_code == code


def test_the_container_s_first_process_is_signalled_without_runc(runc_engine, image, monkeypatch):
    """With no ``runc`` on PATH the signal still arrives: it went by pidfd
    (a stop no longer pays a ``runc kill``)."""
    c = runc_engine.create(RunOptions(image=image, network="none", detach=True, command=[
        "sh", "-c", 'trap "exit 7" USR1; while :; do sleep 0.05; done']))
    runc_engine.start(c.id)
    pid = runc_engine.get(c.id).pid
    time.sleep(0.2)  # the trap is set
    monkeypatch.setenv("PATH", "/nonexistent")
    RuncExecutor(runc_engine.store.root).kill(c.id, pid, signal.SIGUSR1)
    monkeypatch.undo()
    _exited_with(runc_engine, c.id, 7)


def test_a_process_outside_the_container_is_never_signalled(runc_engine, image):
    """A recorded pid that now names another process (reused after the
    container's exit) is not the container's: it gets no signal, and the
    fallback, ``runc kill``, refuses a container that does not run."""
    c = runc_engine.create(RunOptions(image=image, network="none", command=["true"]))
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        RuncExecutor(runc_engine.store.root).kill(c.id, stranger.pid, signal.SIGTERM)
        time.sleep(0.2)
        assert stranger.poll() is None, "a process outside the container was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_frozen_container_its_record_calls_running_still_stops(runc_engine, image):
    """A crash between ``runc pause`` and the record saying "paused" leaves
    the container frozen while its record says running (what recovery then
    finds).  ``stop`` must still end it: its SIGTERM waits, frozen, and the
    SIGKILL after the timeout goes by ``runc kill``, which thaws the cgroup."""
    c = runc_engine.create(RunOptions(image=image, network="none", detach=True,
                                      command=["sleep", "600"]))
    runc_engine.start(c.id)
    RuncExecutor(runc_engine.store.root).pause(c.id)  # the engine's record is not told
    assert runc_engine.get(c.id).state == "running"
    # (a SIGKILL that never lands: NotDone "did not stop" after 15 s)
    assert runc_engine.stop(c.id, timeout=0.5).state == "exited"
