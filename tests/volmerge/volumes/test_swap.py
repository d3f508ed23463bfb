"""Snapshot while a running process has the volume mounted read-write: the
process lives in its own mount namespace (as a container does); --pause
freezes it, the mount is swapped inside its namespace, and its later writes
land in the new live layer, never in the snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from volmerge.errors import Conflict
from volmerge.volumes import ContainerHooks, VolumeManager
from volmerge.volumes.swap import dev_of, mounts_of

from .helpers import seed_dir


def _container(merged: Path, target: Path, cwd_inside: bool = False) -> subprocess.Popen:
    """A process in its own mount namespace with the volume bind-mounted at
    ``target`` (and the host's mount of it gone, as after pivot_root)."""
    script = (f"mount --bind {merged} {target} && umount {merged} && "
              + (f"cd {target} && " if cwd_inside else "")
              + "echo ready && exec busybox sleep 600")
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def running(vm: VolumeManager, tmp_path: Path):
    target = tmp_path / "ctr-data"
    target.mkdir()
    merged = vm.attach("v", "c1", seed_dir(tmp_path))
    procs: list[subprocess.Popen] = []
    calls: list[str] = []

    def start(cwd_inside: bool = False) -> subprocess.Popen:
        p = _container(merged, target, cwd_inside)
        procs.append(p)
        vm.hooks = ContainerHooks(
            pid_of=lambda cid: p.pid,
            pause=lambda cid: (calls.append("pause"), os.kill(p.pid, signal.SIGSTOP)),
            resume=lambda cid: (calls.append("resume"), os.kill(p.pid, signal.SIGCONT)),
        )
        return p

    yield start, target, calls
    for p in procs:
        p.kill()
        p.wait()
    vm.detach("v", "c1")


def test_snapshot_refuses_while_mounted_read_write(vm: VolumeManager, running) -> None:  # type: ignore[no-untyped-def]
    start, target, calls = running
    start()
    with pytest.raises(Conflict, match="--pause"):
        vm.snapshot("v")
    assert vm.snapshots("v") == [] and calls == []


def test_pause_swaps_the_mount_inside_the_namespace(vm: VolumeManager, running) -> None:  # type: ignore[no-untyped-def]
    start, target, calls = running
    p = start()
    inside = Path(f"/proc/{p.pid}/root{target}")
    (inside / "before").write_text("in the snapshot")
    snap = vm.snapshot("v", tag="s", pause=True)
    assert calls == ["pause", "resume"]
    # the process now sees the new overlay (the host's merged view's device)
    assert mounts_of(p.pid, dev_of(vm.pool.merged("v"))).targets == (str(target),)
    (inside / "after").write_text("live")
    assert (inside / "before").read_text() == "in the snapshot"
    assert (vm.live_upper("v") / "after").exists()
    assert not (vm.live_upper("v") / "before").exists()
    with vm.view("v", snap.id) as v:
        assert (v / "before").exists() and not (v / "after").exists()


def test_busy_mount_refuses_and_changes_nothing(vm: VolumeManager, running) -> None:  # type: ignore[no-untyped-def]
    start, target, calls = running
    p = start(cwd_inside=True)
    inside = Path(f"/proc/{p.pid}/root{target}")
    live = vm.live_upper("v")
    with pytest.raises(Conflict, match="working directory"):
        vm.snapshot("v", pause=True)
    assert calls == ["pause", "resume"]
    assert vm.snapshots("v") == [] and vm.live_upper("v") == live
    (inside / "still").write_text("works")
    assert (live / "still").exists()
    assert len(os.listdir(vm.pool.layers)) == 2  # the seed (= base) and the live layer: nothing left over
