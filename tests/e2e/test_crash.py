"""Crash safety of the upgrade: SIGKILL volmerge at every step boundary and
at random instants, run ``volmerge recover``, and check that the container is
fully on the old generation or fully on the new one, with every byte of its
volume data of that generation intact.  More than 50 kills in all."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from .conftest import APP, volume_digest

# In the order an upgrade runs them: while the old version serves, then the switch.
STEP_KINDS = ("serving-snapshot", "serving-copy", "stage-merge", "rename", "create",
              "prepare-start", "stop", "snapshot", "finish-merge", "takeover", "start", "health")
BOUNDARIES = [f"upgrade.{w}-{k}" for k in STEP_KINDS for w in ("before", "after")]
# The volume's own points: the first snapshot swaps the running container's
# mount (#1), the second is taken after the stop (#2).
SNAPSHOT_POINTS = ("snapshot.layer-made", "snapshot.unmounted", "snapshot.committed",
                   "snapshot.remounted")
BOUNDARIES += ["upgrade.committed"] + [f"{p}#{n}" for p in SNAPSHOT_POINTS for n in (1, 2)]
RANDOM_KILLS = 30
UPGRADE = ("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", "--stop-timeout", "2")


# A file held open in the volume refuses the serving snapshot's swap: the
# volume is copied instead while the container is paused (servingcopy.py).
HOLD = ("sh", "-c", "exec 3</data/settings.json; trap 'exit 0' TERM; while :; do sleep 0.05; done")
COPY_POINTS = ("clone-live.paused", "serving-copy.made", "upgrade.after-serving-copy",
               "upgrade.after-stage-merge", "upgrade.after-finish-merge", "upgrade.committed")


@pytest.fixture
def app(vm):  # type: ignore[no-untyped-def]
    return _app(vm)


@pytest.fixture
def held_app(vm):  # type: ignore[no-untyped-def]
    return _app(vm, *HOLD)


def _app(vm, *cmd: str):  # type: ignore[no-untyped-def]
    vm("network", "create", "crashnet", "--subnet", "10.77.0.0/24", check=True)
    vm("run", "-d", "--name", "app", "--network", "crashnet", "-v", "app-data:/data", APP[1],
       *cmd, check=True)
    vm("exec", "app", "sh", "-c", "echo '{\n  \"a\": 10,\n  \"b\": 2\n}' > /data/settings.json && "
       "echo mine > /data/user.txt", check=True)
    old = volume_digest(vm.root, "app-data")
    ip = _ip(vm)
    # What the committed upgrade produces, learnt once from a real run.
    vm(*UPGRADE, check=True)
    new = volume_digest(vm.root, "app-data")
    vm("rollback", "app", "--discard-new-data", check=True)
    assert volume_digest(vm.root, "app-data") == old
    return {"old": old, "new": new, "ip": ip}


def _ip(vm) -> str:  # type: ignore[no-untyped-def]
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store

    st = Store(vm.root)
    try:
        c = json.loads(vm("inspect", "app", "--json").stdout)[0]
        att = NetworkManager(st).attachment(c["id"])
        return att.ip if att else ""
    finally:
        st.close()


def _not_running_leftovers(vm, cs: list[dict]) -> list[str]:  # type: ignore[no-untyped-def]
    """Container roots mounted, network namespaces pinned and veths present
    that no running container owns (a successor's start prepared ahead and
    never undone would leave them)."""
    running = {c["id"] for c in cs if c["state"] == "running"}
    top = f"{vm.root}/containers/"
    with open("/proc/self/mountinfo") as f:
        mounts = {line.split()[4] for line in f}
    left = [m for m in mounts if m.startswith(top) and m[len(top):].split("/")[0] not in running]
    ns = vm.root / "network" / "ns"
    left += [f"netns {n}" for n in (os.listdir(ns) if ns.is_dir() else []) if n not in running]
    veths = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    if len(veths) > len(running):
        left += veths
    return left


def _check_one_generation(vm, app, what: str) -> str:  # type: ignore[no-untyped-def]
    p = vm("recover")
    assert p.returncode == 0, f"{what}: recover failed: {p.stderr}"
    cs = [json.loads(vm("inspect", i, "--json").stdout)[0] for i in vm("ps", "-aq").stdout.split()]
    named = [c for c in cs if c["name"] == "app"]
    assert len(named) == 1, f"{what}: containers {[(c['name'], c['state']) for c in cs]}"
    c = named[0]
    deadline = time.monotonic() + 10
    while c["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        c = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert c["state"] == "running", f"{what}: app is {c['state']}"
    cs = [json.loads(vm("inspect", i, "--json").stdout)[0] for i in vm("ps", "-aq").stdout.split()]
    assert not _not_running_leftovers(vm, cs), f"{what}: {_not_running_leftovers(vm, cs)}"
    data = volume_digest(vm.root, "app-data")
    if c["image"] == APP[1]:
        assert data == app["old"], f"{what}: on the old image but the data changed"
        assert not [x for x in cs if x["name"] != "app"], f"{what}: leftovers {cs}"
        gen = "old"
    else:
        assert c["image"] == APP[2], what
        assert data == app["new"], f"{what}: on the new image but the data is not the merge"
        gen = "new"
    assert _ip(vm) == app["ip"], f"{what}: the address moved"
    return gen


def _back_to_old(vm, gen: str) -> None:  # type: ignore[no-untyped-def]
    """Return to the old generation for the next kill (itself a rollback test)."""
    if gen == "new":
        vm("rollback", "app", "--discard-new-data", check=True)


def test_kill_at_every_step_boundary(vm, app) -> None:  # type: ignore[no-untyped-def]
    outcomes = {}
    for point in BOUNDARIES:
        p = vm(*UPGRADE, env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point} was never reached: {p.stderr}"
        gen = _check_one_generation(vm, app, point)
        outcomes[point] = gen
        _back_to_old(vm, gen)
    # Before the commit everything is undone; after it, the new generation stands.
    assert outcomes["upgrade.before-stop"] == "old" and outcomes["upgrade.after-health"] == "old"
    assert outcomes["upgrade.committed"] == "new"


def test_kill_around_the_serving_copy(vm, held_app) -> None:  # type: ignore[no-untyped-def]
    """Killed while the copy is made (the container paused), after it, after
    the merge staged from it, at the switch and after the commit: recover
    leaves one generation, the container running, and no copy volume."""
    outcomes = {}
    for point in COPY_POINTS:
        p = vm(*UPGRADE, env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point} was never reached: {p.stderr}"
        gen = _check_one_generation(vm, held_app, point)
        assert vm("volume", "ls", "-q").stdout.split() == ["app-data"], point
        outcomes[point] = gen
        _back_to_old(vm, gen)
    assert outcomes["upgrade.after-finish-merge"] == "old"
    assert outcomes["upgrade.committed"] == "new"


def test_kill_at_random_instants(vm, app) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261128)
    env = dict(os.environ, VOLMERGE_ROOT=str(vm.root))
    t0 = time.monotonic()
    vm(*UPGRADE, check=True)
    span = time.monotonic() - t0
    _back_to_old(vm, _check_one_generation(vm, app, "baseline"))
    seen = set()
    for i in range(RANDOM_KILLS):
        delay = rng.uniform(0.05, span)
        proc = subprocess.Popen([sys.executable, "-m", "volmerge", *UPGRADE], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gen = _check_one_generation(vm, app, f"kill {i} after {delay:.3f}s")
        seen.add(gen)
        _back_to_old(vm, gen)
    assert seen, "no kill landed"


def test_kill_a_rollback_before_and_after_its_point_of_no_return(vm, app) -> None:  # type: ignore[no-untyped-def]
    """Before the first volume rollback a killed rollback is undone (the
    upgrade stands); from it on, recover rolls it forward (the old
    generation is back)."""
    expected = {"rollback.after-stop": "new", "rollback.after-movenet": "new",
                "rollback.before-volrollback": "new", "rollback.after-volrollback": "old",
                "rollback.after-starttarget": "old"}
    for point, want in expected.items():
        vm(*UPGRADE, check=True)
        p = vm("rollback", "app", "--discard-new-data", env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point} was never reached: {p.stderr}"
        assert _check_one_generation(vm, app, point) == want, point
        _back_to_old(vm, want)
