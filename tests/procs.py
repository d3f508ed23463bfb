"""Processes as /proc shows them: for the leak guard (tests/conftest.py) and
the podman helper (tests/podman.py).  No side effects on import, unlike
conftest.py (which enters namespaces), so a subprocess may import it."""

from __future__ import annotations

import os


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
