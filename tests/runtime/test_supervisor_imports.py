"""A detached container's supervisor stays small: a fresh interpreter that
imports what owning a run needs (the store, the records, the bundles, an
executor) and no CLI or engine framework (runtime/supervisor.py).  Not
timed: the list of modules it imported in its life, which it writes where
``VOLMERGE_SUPERVISOR_MODULES`` says."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from volmerge.runtime.records import pid_alive

#: never in a supervisor: the CLI and its framework, the engine's facade and
#: lifecycle (the CLI's side), argument parsing and ``-m``'s machinery
FORBIDDEN = ("typer", "click", "rich", "pydantic", "volmerge.cli", "volmerge.upgrade",
             "volmerge.runtime.containers", "volmerge.runtime.lifecycle",
             "volmerge.runtime.images", "argparse", "runpy", "site")


def _modules(path: Path, timeout: float = 20) -> list[str]:
    """The modules the supervisor imported in its life (a forked one's
    inherited ones are not among them: see :func:`_inherited`)."""
    return [m for m in _listing(path, timeout) if not m.startswith("inherited:")]


def _inherited(path: Path) -> list[str]:
    """The modules a forked supervisor had from the command it was forked from."""
    return [m.removeprefix("inherited:") for m in _listing(path) if m.startswith("inherited:")]


def _listing(path: Path, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().endswith("\n"):
        assert time.monotonic() < deadline, "the supervisor wrote no module list"
        time.sleep(0.02)
    return path.read_text().split()


def _forbidden(mods: list[str]) -> list[str]:
    return [m for m in mods if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_the_cli_s_supervisor_imports_no_framework(cli, image, tmp_path):
    """Through the product: ``run -d`` (the context's factory), then ``stop``."""
    out = tmp_path / "modules"
    env = {"VOLMERGE_SUPERVISOR_MODULES": str(out)}
    p = cli("run", "-d", "--runtime", "runc", "--network", "none", image, "/bin/sh", "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done", env=env)
    assert p.returncode == 0, p.stderr
    assert cli("stop", p.stdout.strip()).returncode == 0
    mods = _modules(out)
    assert "volmerge.runtime.supervisor" in mods and "volmerge.runtime.bundle" in mods
    assert _forbidden(mods) == []
    assert cli("rm", p.stdout.strip()).returncode == 0


def test_the_fast_start_s_forked_supervisor_holds_no_framework(cli, image, tmp_path, root):
    """``start`` forks the supervisor (runtime.superspawn.Forked) once it
    has imported what a supervisor runs on, before the lifecycle, the store
    or a lock: the child's modules, its own and those it has from the
    command, are the spawned one's plus the command's launcher and argument
    parsing; no framework, no engine (the honest equivalent of the spawned
    supervisor's list).  No lock of the command's stays held by it."""
    import fcntl

    p = cli("run", "-d", "--name", "web", "--runtime", "runc", "--network", "none", image,
            "/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    assert cli("stop", "web").returncode == 0
    out = tmp_path / "modules"
    p = cli("start", "web", env={"VOLMERGE_SUPERVISOR_MODULES": str(out)})
    assert p.returncode == 0, p.stderr
    with open(root / "locks" / f"container-{cid}.lock", "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
    assert cli("stop", "web").returncode == 0
    mods, inherited = _modules(out), _inherited(out)
    assert "volmerge.cli.fastlife" in inherited, "not forked from the command"
    assert {"volmerge.runtime.supervisor", "volmerge.runtime.bundle"} <= {*mods, *inherited}
    assert _forbidden(mods) == []
    # of the command: its launcher (``-m``, site) and its parser besides; no engine, no framework
    assert [m for m in _forbidden(inherited)
            if m not in ("runpy", "site") and not m.startswith("volmerge.cli")] == []
    assert cli("rm", "web").returncode == 0


def test_a_bare_engine_s_supervisor_imports_no_framework(engine, image, tmp_path, monkeypatch):
    """Without a factory: the engine's defaults, still not the engine."""
    from volmerge.runtime.options import RunOptions

    out = tmp_path / "modules"
    monkeypatch.setenv("VOLMERGE_SUPERVISOR_MODULES", str(out))
    c = engine.create(RunOptions(image=image, command=["/bin/true"], network="none"))
    engine.start(c.id)
    mods = _modules(out)
    assert "volmerge.runtime.records" in mods
    assert _forbidden(mods) == []
    assert engine.wait(c.id, timeout=10) == 0


@pytest.mark.unit
def test_the_owner_s_pidfd_is_of_that_process_only():
    """stop waits on the owner's pidfd: opened for a live owner whose start
    time matches, never for a recycled pid or a gone one."""
    from types import SimpleNamespace

    from volmerge.runtime.lifecycle import _owner_pidfd
    from volmerge.runtime.records import proc_start_time

    me = os.getpid()
    fd = _owner_pidfd(SimpleNamespace(owner_pid=me, owner_start=proc_start_time(me)))
    assert fd is not None
    os.close(fd)
    assert _owner_pidfd(SimpleNamespace(owner_pid=me, owner_start="1")) is None  # recycled
    assert _owner_pidfd(SimpleNamespace(owner_pid=None, owner_start=None)) is None
    assert not pid_alive(2**22 + 1, None)
    assert _owner_pidfd(SimpleNamespace(owner_pid=2**22 + 1, owner_start=None)) is None


def test_a_supervisor_spawned_ahead_and_cancelled_starts_nothing(engine, image):
    """A detached start spawns the supervisor before it prepares the run
    (runtime.superspawn.Pending); cancelled (the container was running
    already, the prepare failed), it ends without touching the container."""
    from tests.procs import processes_whose
    from volmerge.runtime.options import RunOptions
    from volmerge.runtime.superspawn import Pending

    c = engine.create(RunOptions(image=image, command=["/bin/true"], network="none"))
    Pending(c, str(engine.store.root), None).cancel()
    deadline = time.monotonic() + 20
    while processes_whose("cmdline", c.id.encode()):
        assert time.monotonic() < deadline, "the cancelled supervisor lives on"
        time.sleep(0.02)
    cur = engine.get(c.id)
    assert cur.state == "created" and cur.owner_pid is None and not cur.started_at


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_a_socket_activated_container_s_supervisor_imports_sockholder_before_its_go(engine, image):
    """socket (~4 ms with selectors) is the supervisor's only for
    ``--socket-activate``: one spawned ahead for such a container imports
    runtime.sockholder while it waits for its go, not after it (on the
    switch's path); one for another container does not import it at all.
    Seen from outside: the _socket extension mapped into the waiting process."""
    from tests.procs import processes_whose
    from volmerge.runtime.options import RunOptions, parse_socket_activate
    from volmerge.runtime.superspawn import Pending

    sa = engine.create(RunOptions(image=image, command=["/bin/true"], network="none",
                                  socket_activate=[parse_socket_activate("127.0.0.1:18097:80")]))
    plain = engine.create(RunOptions(image=image, command=["/bin/true"], network="none"))
    waiting = {c.id: Pending(c, str(engine.store.root), None) for c in (sa, plain)}

    def mapped(cid: str) -> bool:  # in the supervisor (double-forked: not Pending.pid)
        return any("_socket" in _maps(pid) for pid in processes_whose("cmdline", cid.encode()))

    try:
        deadline = time.monotonic() + 20
        while not mapped(sa.id):
            assert time.monotonic() < deadline, "sockholder was not imported before the go"
            time.sleep(0.02)
        time.sleep(0.2)  # the plain one had as long, and more, to get ready for its go
        assert not mapped(plain.id)
    finally:
        for p in waiting.values():
            p.cancel()
    deadline = time.monotonic() + 20
    while processes_whose("cmdline", sa.id.encode()) or processes_whose("cmdline",
                                                                       plain.id.encode()):
        assert time.monotonic() < deadline, "a cancelled supervisor lives on"
        time.sleep(0.02)


@pytest.mark.unit
def test_the_supervisor_command_line_takes_only_known_preloads() -> None:
    from volmerge.runtime.supervisor import _Args

    a = _Args(["abc", "--root", "/r", "--preload", "sockholder"])
    assert a.preload == ("sockholder",)
    assert _Args(["abc", "--root", "/r"]).preload == ()
    for bad in ("os", "sockholder,subprocess", "../x"):
        with pytest.raises(SystemExit, match="bad arguments"):
            _Args(["abc", "--root", "/r", "--preload", bad])
