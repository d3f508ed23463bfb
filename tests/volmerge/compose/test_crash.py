"""Crash safety of a stack upgrade: SIGKILL `volmerge compose upgrade` of a
two-service stack at every step boundary of its one journal (and at random
instants), then plain `volmerge recover` (no project files): every service
on one and the same stack generation, old or new together, each volume's
data exactly that generation's, nothing left over.  Also a stack rollback
killed before and after its point of no return.  Real containers, the CLI.

The step list is the journal's (upgrade/group.py): per service a ``part``
marker, then the upgrade's own steps; ``VOLMERGE_FAULT=stack.before-KIND#N``
kills at the N-th step of that kind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_upgrade import _write

pytestmark = pytest.mark.usefixtures("own_netns")

# each service's steps in journal order (upgrade/build.py): staged while the
# old version serves, then the switch
SERVICE_STEPS = ("part", "serving-snapshot", "serving-copy", "stage-merge", "rename", "create",
                 "prepare-start", "stop", "snapshot", "finish-merge", "snapshot", "takeover",
                 "start", "health")


def _boundaries() -> list[tuple[str, str]]:
    """(fault point, the generation recovery must leave) for every step of
    the two services' chain, in journal order."""
    seen: dict[str, int] = {}
    out = [("compose.begun", "old")]
    for _service in ("db", "web"):
        for kind in SERVICE_STEPS:
            seen[kind] = seen.get(kind, 0) + 1
            out.append((f"stack.before-{kind}#{seen[kind]}", "old"))
    out += [("stack.after-health#2", "old"), ("stack.committed", "new")]
    return out


BOUNDARIES = _boundaries()
OLD = {"db": {"seed.txt": b"1\n", "mine": b"mine\n"}, "web": {"seed.txt": b"1\n"}}
NEW = {"db": {"seed.txt": b"2\n", "mine": b"mine\n"}, "web": {"seed.txt": b"2\n"}}


@pytest.fixture
def two_images(store, app_rootfs) -> None:
    from volmerge.runtime.images import ImageStore

    images = ImageStore(store)
    cfg = {"Cmd": ["sleep", "1000"], "Volumes": {"/data": {}}}
    for tag in ("1", "2"):
        images.import_dir(app_rootfs(tag, True), tag=f"localhost/app:{tag}", config=cfg)


@pytest.fixture
def stack(cli, two_images, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The stack up on release 1 with data of its own, its file naming release 2."""
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert cli(*c, "exec", "db", "sh", "-c", "echo mine > /data/mine").returncode == 0
    _write(tmp_path, "2", "2")
    return c


def _volume(root: Path, name: str) -> dict[str, bytes]:
    from volmerge.runtime.store import Store
    from volmerge.volumes import VolumeManager

    st = Store(root, sweep=False)
    try:
        with VolumeManager(st).view(name) as v:
            return {str(p.relative_to(v)): p.read_bytes() for p in sorted(v.rglob("*"))
                    if p.is_file()}
    finally:
        st.close()


def _state(root: Path) -> tuple[dict[str, tuple[str, str]], list[str], int]:
    """Containers by name: (image, state); and the journals still open."""
    from volmerge.context import make_engine
    from volmerge.runtime.store import Store

    st = Store(root, sweep=False)
    try:
        cs = {c.name: (c.image_ref, c.state) for c in make_engine(st).list(all=True)}
        (open_,) = st.db.execute("SELECT count(*) FROM upgrade_journal "
                                 "WHERE state IN ('begun', 'committed')").fetchone()
        return cs, sorted(cs), int(open_)
    finally:
        st.close()


def _one_generation(cli, root: Path, what: str) -> str:  # type: ignore[no-untyped-def]
    """After plain `volmerge recover`: which stack generation stands
    ("old" / "new"), checked whole."""
    p = cli("recover")
    assert p.returncode == 0, f"{what}: recover failed: {p.stderr}"
    cs, names, open_ = _state(root)
    assert open_ == 0, f"{what}: a journal is still open"
    live = {n: cs[n] for n in ("st-db-1", "st-web-1")}
    images = {img for img, _s in live.values()}
    assert len(images) == 1, f"{what}: services on different generations: {live}"
    assert all(s == "running" for _i, s in live.values()), f"{what}: {live}"
    gen = "old" if images == {"localhost/app:1"} else "new"
    parked = ["st-db-1.gen1", "st-web-1.gen1"] if gen == "new" else []
    assert names == sorted(["st-db-1", "st-web-1", *parked]), f"{what}: containers {names}"
    want = OLD if gen == "old" else NEW
    for svc in ("db", "web"):
        assert _volume(root, f"st_{svc}data") == want[svc], f"{what}: {svc}'s data ({gen})"
    states = _history(root)
    assert states in ([], ["failed"]) if gen == "old" else states == ["current"], (what, states)
    return gen


def _history(root: Path) -> list[str]:
    """The stack generations' states, settled from the journal as `compose
    history` shows them."""
    from volmerge.compose import history
    from volmerge.runtime.store import Store

    st = Store(root, sweep=False)
    try:
        history.settle(st, "st")
        return [g.state for g in history.generations(st, "st")]
    finally:
        st.close()


@pytest.mark.parametrize(("point", "want"), BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_kill_a_stack_upgrade_at_every_step(cli, root, stack, tmp_path, point, want) -> None:  # type: ignore[no-untyped-def]
    p = cli(*stack, "upgrade", "--health-timeout", "20", env={"VOLMERGE_FAULT": point})
    assert p.returncode == -signal.SIGKILL, f"{point} was never reached: {p.stderr}"
    (tmp_path / "compose.yaml").rename(tmp_path / "elsewhere.yaml")  # recovery needs no file
    assert _one_generation(cli, root, point) == want


def test_kill_a_stack_rollback_before_and_after_its_point_of_no_return(cli, root, stack) -> None:  # type: ignore[no-untyped-def]
    """The stack rollback is one journal too: killed before web's volume
    rollback (the first of the chain, newest service first) it is undone,
    the upgrade stands; from it on it is rolled forward, db included."""
    assert cli(*stack, "upgrade", "--health-timeout", "20").returncode == 0
    for point, want in (("stack.before-volrollback#1", "new"),
                        ("stack.before-volrollback#2", "old")):
        p = cli(*stack, "rollback", "--discard-new-data", env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point} was never reached: {p.stderr}"
        p = cli("recover")
        assert p.returncode == 0, p.stderr
        cs, _names, open_ = _state(root)
        assert open_ == 0
        images = {cs[n][0] for n in ("st-db-1", "st-web-1")}
        assert images == {f"localhost/app:{'2' if want == 'new' else '1'}"}, (point, cs)
        want_data = NEW if want == "new" else OLD
        for svc in ("db", "web"):
            assert _volume(root, f"st_{svc}data") == want_data[svc], (point, svc)
        hist = _history(root)
        assert hist == (["current"] if want == "new" else ["rolled-back"]), (point, hist)


def test_kill_a_stack_upgrade_at_random_instants(cli, root, stack) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261205)
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    args = [sys.executable, "-m", "volmerge", *stack, "upgrade", "--health-timeout", "20"]
    t0 = time.monotonic()
    assert subprocess.run(args, env=env, capture_output=True).returncode == 0
    span = time.monotonic() - t0
    assert cli(*stack, "rollback", "--discard-new-data").returncode == 0
    for i in range(4):
        delay = rng.uniform(0.3, span)
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        what = f"kill {i} after {delay:.2f}s"
        p = cli("recover")
        assert p.returncode == 0, f"{what}: {p.stderr}"
        cs, _names, open_ = _state(root)
        assert open_ == 0, what
        images = {cs[n][0] for n in ("st-db-1", "st-web-1")}
        assert len(images) == 1, (what, cs)
        want = NEW if images == {"localhost/app:2"} else OLD
        for svc in ("db", "web"):
            assert _volume(root, f"st_{svc}data") == want[svc], (what, svc)
        if want is NEW:
            assert cli(*stack, "rollback", "--discard-new-data").returncode == 0, what
