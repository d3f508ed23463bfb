"""Crash safety: SIGKILL at every named step of snapshot, rollback, clone,
compact, create and remove leaves each volume in the state before or the
state after (checksums of every snapshot and of the current view), and the
next command sweeps every incomplete layer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys
from volmerge.runtime.store import Store
from volmerge.volumes import ContainerHooks, VolumeManager
from volmerge.volumes.faults import STEPS

from .helpers import digest, seed_dir, write

OPS = {
    "create": "vm.create('n2', seed=Path(SEED))",
    "snapshot": "vm.snapshot('v', tag='s')",
    "snapshot-attached": "vm.snapshot('v', tag='s', force=True)",
    "rollback": "vm.rollback('v', to='t1')",
    "rollback-keep": "vm.rollback('v', to='t1', keep_as='k')",
    "clone": "vm.clone('v', 'c', from_='t1')",
    "compact": "vm.compact('v')",
    "remove": "vm.remove('v')",
}
SCRIPT = """
import sys
from pathlib import Path
from volmerge.runtime.store import Store
from volmerge.volumes import VolumeManager, ContainerHooks
ROOT, SEED = sys.argv[1], sys.argv[2]
hooks = ContainerHooks(pid_of=lambda c: None, pause=lambda c: None, resume=lambda c: None)
vm = VolumeManager(Store(ROOT), hooks=hooks)
{op}
"""
NO_ENGINE = ContainerHooks(pid_of=lambda c: None, pause=lambda c: None, resume=lambda c: None)


def _setup(root: Path, seed: Path, attached: bool) -> None:
    store = Store(root)
    vm = VolumeManager(store)
    vm.create("v", seed)
    write(vm.live_upper("v"), {"etc/app.conf": "changed\n", "g1": "1"})
    vm.snapshot("v", tag="t1")
    write(vm.live_upper("v"), {"g2": "2"})
    vm.snapshot("v")
    write(vm.live_upper("v"), {"g3": "3", "g1": "one"})
    vm.snapshot("v")
    write(vm.live_upper("v"), {"live": "l"})
    if attached:
        vm.attach("v", "c1", None)
    store.close()


def _state(root: Path) -> dict:
    store = Store(root)  # opening the store runs the sweepers
    vm = VolumeManager(store, hooks=NO_ENGINE)
    out = {}
    for v in vm.list():
        views = []
        for s in v.snapshots:
            with vm.view(v.name, s.id) as p:
                views.append((s.tag or "*", digest(p)))
        with vm.view(v.name) as p:
            views.append(("now", digest(p)))
        out[v.name] = (views, digest(vm.base_path(v.name)), sorted(v.users))
    # nothing incomplete is left: every layer in the pool is named by a manifest
    pool = vm.pool
    assert set(os.listdir(pool.layers)) == pool.referenced()
    assert os.listdir(pool.journal) == []
    assert os.listdir(root / "tmp") == []
    for v in vm.list():  # a volume in use is mounted on its live layer
        merged = pool.merged(v.name)
        if v.users:
            assert rsys.is_mountpoint(merged)
            assert str(pool.diff(vm.pool.read(v.name).live)) in _mount_opts(merged)
        else:
            assert not rsys.is_mountpoint(merged)
    store.close()
    return out


def _mount_opts(path: Path) -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == str(path):
                return line
    return ""


def _run(root: Path, seed: Path, op: str, fault: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("VOLMERGE_FAULT", None)
    if fault:
        env["VOLMERGE_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", SCRIPT.format(op=OPS[op]), str(root), str(seed)],
                          env=env, capture_output=True, text=True, timeout=60)


CASES = [(op, step) for op in OPS for step in STEPS[op.replace("-attached", "")]]


@pytest.mark.parametrize("op,step", CASES, ids=[f"{o}@{s}" for o, s in CASES])
def test_kill_at_every_step(op: str, step: str, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    roots = {k: tmp_path / k for k in ("before", "after", "crash")}
    attached = op.endswith("-attached")
    try:
        for r in roots.values():
            _setup(r, seed, attached)
        before = _state(roots["before"])
        p = _run(roots["after"], seed, op, None)
        assert p.returncode == 0, p.stderr
        after = _state(roots["after"])
        assert after != before
        p = _run(roots["crash"], seed, op, step)
        assert p.returncode == -9, f"step {step} never reached: {p.stderr}"
        assert _state(roots["crash"]) in (before, after)
    finally:
        for r in roots.values():
            rsys.umount_tree(r)


def test_cli_honours_the_fault_hook(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("volume", "create", "v").returncode == 0
    p = cli("volume", "snapshot", "v", env={"VOLMERGE_FAULT": "snapshot.committed"})
    assert p.returncode == -9
    p = cli("volume", "ls", "--json")
    assert p.returncode == 0 and '"snapshots": 1' in p.stdout
