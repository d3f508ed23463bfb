"""A command is one process: nothing of it outlives it, and the hot commands
import only what they need (the start-up budget's deny-list, bench/bench_startup.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_startup import DENY, commands, parse_importtime


def _env(root: Path) -> dict[str, str]:
    # nothing that once turned a background command server off
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLMERGE_SERVER")}
    return {**env, "VOLMERGE_ROOT": str(root)}


def _processes_of(root: Path) -> list[int]:
    """Processes other than this one whose environment or command line names the store."""
    needle = os.fsencode(str(root))
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"VOLMERGE_ROOT=" + needle + b"\0" in env or needle in cmd:
            found.append(int(pid))
    return found


# Runs the command as the child of a subreaper: whatever the command leaves
# running, however detached (setsid, double fork), becomes the reaper's child,
# so what outlived the command is known the moment it exits, without waiting
# to see whether something shows up.  Prints [exit code, pids left].
_REAPER = """
import json, os, subprocess, sys
from volmerge.runtime import sys as rsys
rsys.prctl(rsys.PR_SET_CHILD_SUBREAPER, 1)
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
left = []
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/children") as f:
        left += [int(pid) for pid in f.read().split()]
for pid in left:
    os.kill(pid, 9)
print(json.dumps([rc, left]))
"""


def _sockets_in(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            if n == "cli.sock" or stat.S_ISSOCK(os.lstat(p).st_mode):
                out.append(p)
    return out


@pytest.mark.parametrize("args", [["ps"], ["ps", "-a", "--json"], ["--version"],
                                  ["run", "--rm", "--network", "none", "IMAGE", "/bin/true"]])
def test_a_command_leaves_no_process_and_no_socket(root, image, args):
    args = [image if a == "IMAGE" else a for a in args]
    env = _env(root)
    for _ in range(2):  # the first and a later command of the store
        p = subprocess.run([sys.executable, "-c", _REAPER, sys.executable, "-m", "volmerge",
                            *args], env=env, capture_output=True, text=True, timeout=60)
        rc, left = json.loads(p.stdout)
        assert rc == 0, p.stderr
        assert left == [], f"outlived the command: {left}"
        assert _processes_of(root) == []
        assert _sockets_in(root) == []
    assert not any(Path(root, "locks").glob("cli*"))


@pytest.mark.parametrize("name", sorted(DENY))
def test_hot_commands_import_nothing_deny_listed(root, image, name):
    """``-X importtime`` of a fresh process: e.g. ``run --network none`` without
    typer or pyroute2, a bridged ``run`` with pyroute2's core only (not its
    ndb, ipdb, nftables... that its package __init__ imports), ``ps``
    without rich or the SQL stack."""
    argv = commands(image)[name]
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "volmerge", *argv],
                       env=_env(root), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    imports = parse_importtime(p.stderr)
    assert "volmerge.cli" in imports.self_us
    assert imports.denied(DENY[name]) == []


def test_a_run_rm_commits_five_times_and_syncs_two(engine, image, store):
    """Five commits of the state database on the run path: create, mounts,
    running, exited, removed.  A container just created already has what
    start resets (stop request, error, health, restarts), so start writes
    nothing for it (it used to: a sixth commit).  Only the container's
    existence (create, remove) is durable (``synchronous = FULL``, an
    fsync); its run state is not (NORMAL), as reconciliation restores it."""
    from volmerge.runtime.options import RunOptions

    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        code = engine.run(RunOptions(image=image, command=["/bin/true"], rm=True, network="none"))
    finally:
        store.db.set_trace_callback(None)
    assert code == 0
    assert [s for s in statements if s.strip().upper() == "COMMIT"] == ["COMMIT"] * 5
    at_begin, level = [], "?"  # the level each BEGIN ran at
    for s in statements:
        if s.startswith("PRAGMA synchronous ="):
            level = s.split("=")[1].strip()
        elif s.startswith("BEGIN"):
            at_begin.append(level)
    assert at_begin == ["FULL", "NORMAL", "NORMAL", "NORMAL", "FULL"]


def test_pyroute2_without_its_package_init_until_a_name_of_it_is_used():
    """links.py loads pyroute2's message classes only; the package's own names
    (NDB, IPRoute...) still work for anyone else in the process: the first
    use runs its __init__."""
    code = (
        "import sys\n"
        "import volmerge.runtime.network.links as links\n"
        "assert 'pyroute2.ndb' not in sys.modules and 'pyroute2.ipdb' not in sys.modules\n"
        "from pyroute2 import NDB, IPRoute\n"
        "import pyroute2\n"
        "from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg\n"
        "assert pyroute2.NDB is NDB and 'pyroute2.ndb' in sys.modules\n"
        "assert ifinfmsg is links.ifinfmsg and IPRoute.__module__.startswith('pyroute2.')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 0, p.stderr


def test_the_run_path_leaves_without_a_checkpoint_and_loses_nothing(root, image):
    """The typer-free run path ends with os._exit (volmerge.cli._leave): SQLite's
    checkpoint of a closing last connection is skipped, so the write-ahead log
    stays; what the command printed still arrives and what it committed is there
    for the next command."""
    env = _env(root)
    p = subprocess.run([sys.executable, "-m", "volmerge", "run", "-d", "--name", "kept",
                        "--network", "none", image, "sleep", "60"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    assert len(cid) == 64  # flushed before the process left
    try:
        wal = Path(root, "state.db-wal")
        assert wal.exists() and wal.stat().st_size > 0
        p = subprocess.run([sys.executable, "-m", "volmerge", "run", "--rm", "--network", "none",
                            image, "/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
                           env=env, capture_output=True, text=True, timeout=60)
        assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
        ps = subprocess.run([sys.executable, "-m", "volmerge", "ps", "-a", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
        assert ps.returncode == 0, ps.stderr
        assert [(c["id"], c["state"]) for c in json.loads(ps.stdout)] == [(cid, "running")]
    finally:
        subprocess.run([sys.executable, "-m", "volmerge", "rm", "-f", "kept"], env=env,
                       capture_output=True, timeout=60)
