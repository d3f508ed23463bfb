"""Processes as /proc shows them: for the leak guard (tests/conftest.py) and
the podman helper (tests/podman.py); and CLI commands started at once, for
the tests that contend a lock.  No side effects on import, unlike
conftest.py (which enters namespaces), so a subprocess may import it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid,
    ...); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int | str) -> bool:
    """Running, not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != b"Z"


def processes_whose(field: str, *needles: bytes) -> set[int]:
    """Live processes (not this one) whose /proc/PID/``field`` (``cmdline``,
    ``environ``) holds any of ``needles``."""
    me = os.getpid()
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/{field}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if any(n in data for n in needles) and alive(pid):
            found.add(int(pid))
    return found


def run_together(root: Path, commands: list[tuple[str, ...]]) -> list[tuple[int, str, str]]:
    """Start every ``volmerge COMMAND`` against the store ``root`` at once,
    then wait for each: (exit code, stdout, stderr) in order.  None of them
    may end in a traceback."""
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    procs = [subprocess.Popen([sys.executable, "-m", "volmerge", *c], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=120)
        assert "Traceback" not in se, se
        out.append((p.returncode, so, se))
    return out
