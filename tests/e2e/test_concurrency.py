"""Many commands at once against one store: each succeeds, or says in one line
that it was refused; none prints a traceback or "database is locked", and no
update is lost (the state afterwards is what the commands that succeeded did).

Every command is a real CLI process started together with the others (a
barrier file they wait on, so that they really overlap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import APP

pytestmark = pytest.mark.slow

UPGRADE = ("--health-timeout", "0.3", "--stop-timeout", "2")


def _start(root: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    return subprocess.Popen([sys.executable, "-m", "volmerge", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _together(root: Path, commands: list[tuple[str, ...]], timeout: float = 240) -> list[tuple[int, str, str]]:
    """Start every command at once; (exit code, stdout, stderr) of each, in order."""
    procs = [_start(root, *c) for c in commands]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        out.append((p.returncode, so, se))
    for code, _, err in out:
        _no_crash(code, err)
    return out


def _no_crash(code: int, err: str) -> None:
    """A refusal is one line with exit 1 or 2; never a traceback or a raw SQLite lock."""
    assert "Traceback" not in err, err
    assert "database is locked" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code != 0:
        errors = [ln for ln in err.splitlines() if ln.startswith("volmerge: error: ")]
        assert len(errors) == 1, err


def test_twenty_parallel_run_rm(vm) -> None:  # type: ignore[no-untyped-def]
    results = _together(vm.root, [("run", "--rm", "--network", "none", APP[1], "sh", "-c",
                                   f"echo run{i}") for i in range(20)])
    assert [(code, so) for code, so, _ in results] == [(0, f"run{i}\n") for i in range(20)], [
        err for _, _, err in results if err]
    assert vm("ps", "-aq").stdout == ""
    assert vm("volume", "ls", "-q").stdout == ""  # each --rm took its anonymous volume along


def test_five_parallel_upgrades_of_different_containers(vm) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        vm("run", "-d", "--name", f"app{i}", "--network", "none", "-v", f"data{i}:/data", APP[1],
           check=True)
        vm("exec", f"app{i}", "sh", "-c", f"echo mine{i} > /data/mine.txt", check=True)
    results = _together(vm.root, [("upgrade", f"app{i}", "--to", APP[2], "--json", *UPGRADE)
                                  for i in range(5)])
    assert [code for code, _, _ in results] == [0] * 5, [err for _, _, err in results]
    assert sorted(json.loads(so)["generation"] for _, so, _ in results) == [2] * 5
    for i in range(5):
        [c] = [c for c in json.loads(vm("ps", "--json").stdout) if c["name"] == f"app{i}"]
        assert c["image"] == APP[2] and c["state"] == "running"
        got = vm("exec", f"app{i}", "cat", "/data/mine.txt", "/data/added.txt", check=True).stdout
        assert got == f"mine{i}\nnew in v2\n"  # the operator's file kept, the release's added


def test_snapshot_of_a_volume_whose_container_is_upgrading(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "--network", "none", "-v", "appdata:/data", APP[1], check=True)
    up = _start(vm.root, "upgrade", "app", "--to", APP[2], *UPGRADE)
    snaps = []
    while up.poll() is None and len(snaps) < 40:
        p = vm("volume", "snapshot", "--pause", "appdata")
        _no_crash(p.returncode, p.stderr)
        snaps.append(p.returncode)
    so, se = up.communicate(timeout=240)
    _no_crash(up.returncode, se)
    assert up.returncode == 0, se
    assert snaps and set(snaps) <= {0, 1, 2}
    # the volume is whole and the upgrade's result stands
    assert vm("exec", "app", "cat", "/data/added.txt", check=True).stdout == "new in v2\n"
    assert vm("volume", "inspect", "appdata").returncode == 0


def test_image_rm_while_a_run_of_it_starts(vm) -> None:  # type: ignore[no-untyped-def]
    vm("image", "tag", APP[1], "localhost/race/app:1", check=True)
    for _ in range(3):
        (run_code, _, run_err), (rm_code, _, rm_err) = _together(
            vm.root, [("run", "--rm", "--network", "none", "localhost/race/app:1", "true"),
                      ("image", "rm", "localhost/race/app:1")])
        # either the run came first (rm removed only the tag after, or refused)
        # or the rm did (the run says the image is not there): never half of each
        assert run_code == 0 or "localhost/race/app:1" in run_err, run_err
        images = vm("image", "ls", "--json").stdout
        if rm_code == 0:
            assert "localhost/race/app" not in images
            vm("image", "tag", APP[1], "localhost/race/app:1", check=True)
        else:
            assert "localhost/race/app" in images
    assert vm("ps", "-aq").stdout == ""
    vm("run", "--rm", "--network", "none", APP[1], "true", check=True)  # the layers are whole


def test_network_rm_while_a_container_joins_it(vm) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        vm("network", "create", "racenet", check=True)
        (run_code, run_out, run_err), (rm_code, _, rm_err) = _together(
            vm.root, [("run", "-d", "--name", f"joiner{i}", "--network", "racenet", APP[1]),
                      ("network", "rm", "racenet")])
        nets = vm("network", "ls", "-q").stdout.split()
        if rm_code == 0:
            assert "racenet" not in nets
            # the run either finished joining first (and the rm refused... it did not) or it
            # found no network: it must not be left running on a removed network
            assert run_code != 0 and "racenet" in run_err, run_err
        else:
            assert "racenet" in nets and run_code == 0, (rm_err, run_err)
            assert "in use" in rm_err or "container" in rm_err, rm_err
        vm("rm", "-f", f"joiner{i}")
        if "racenet" in vm("network", "ls", "-q").stdout.split():
            vm("network", "rm", "racenet", check=True)


def test_two_recover_at_once(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "--network", "none", "-v", "appdata:/data", APP[1], check=True)
    # an upgrade killed half-way leaves a pending transaction to recover
    env = dict(os.environ, VOLMERGE_ROOT=str(vm.root), VOLMERGE_FAULT="upgrade.after-finish-merge")
    p = subprocess.run([sys.executable, "-m", "volmerge", "upgrade", "app", "--to", APP[2],
                        *UPGRADE], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == -9, p.stderr
    results = _together(vm.root, [("recover",), ("recover",)])
    assert [code for code, _, _ in results] == [0, 0], results
    [c] = [c for c in json.loads(vm("ps", "--json").stdout) if c["name"] == "app"]
    assert c["image"] in (APP[1], APP[2]) and c["state"] == "running"
    again = vm("recover")
    assert again.returncode == 0 and "app" not in again.stdout  # nothing left to recover


REFUSED = ("another upgrade, rollback or rehearsal of solo is running", "cannot prune solo")


def test_one_container_upgraded_twice_rehearsed_and_pruned_at_once(vm) -> None:  # type: ignore[no-untyped-def]
    """The container's transaction lock (``upgrade-NAME``) between processes:
    each command runs whole or is refused in one line (exit 2), and the
    generations are exactly the upgrades that ran."""
    vm("run", "-d", "--name", "solo", "--network", "none", "-v", "solodata:/data", APP[1], check=True)
    vm("exec", "solo", "sh", "-c", "echo mine > /data/mine.txt", check=True)
    results = _together(vm.root, [("upgrade", "solo", "--to", APP[2], *UPGRADE),
                                  ("upgrade", "solo", "--to", APP[2], *UPGRADE),
                                  ("upgrade", "solo", "--to", APP[2], "--rehearse", *UPGRADE),
                                  ("prune", "solo")])
    for code, _, err in results:
        assert code == 0 or (code == 2 and any(r in err for r in REFUSED)), (code, err)
    ran = sum(code == 0 for code, _, _ in results[:2])
    assert any(code == 0 for code, _, _ in results), results  # the first to take the lock ran
    assert any(code == 2 for code, _, _ in results), "no command met another: no contention"
    hist = json.loads(vm("history", "solo", "--json").stdout)
    gens = [h for h in hist if h["type"] == "generation"]
    assert len(gens) == 1 + ran if ran else len(gens) <= 1, hist  # a rehearsal adds none
    [c] = [c for c in json.loads(vm("ps", "--json").stdout) if c["name"] == "solo"]
    assert c["image"] == APP[2 if ran else 1] and c["state"] == "running"
    want = "mine\nnew in v2\n" if ran else "mine\n"
    assert vm("exec", "solo", "sh", "-c", "cat /data/mine.txt /data/added.txt 2>/dev/null",
              ).stdout == want
    assert vm("recover").returncode == 0 and vm("volume", "ls", "-q").stdout.split() == ["solodata"]
