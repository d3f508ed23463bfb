"""A supervisor forked from the command (runtime.superspawn.Forked) ends
without touching anything when it is not told to go: the command cancelled
it (the container ran already) or died before the go."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.procs import processes_whose


def _gone(needle: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while processes_whose("cmdline", needle):
        assert time.monotonic() < deadline, "the forked supervisor lives on"
        time.sleep(0.02)


def test_a_forked_supervisor_ends_when_its_command_dies(root):
    """The child keeps no copy of the command's end of the go pipe: the
    command gone, it reads end of file and ends (the command's stderr,
    which it holds until the go, closes with it)."""
    marker = f"forked-{os.getpid()}-{time.monotonic_ns()}"
    code = ("import os, sys\nfrom volmerge.runtime.superspawn import Forked\n"
            "Forked(sys.argv[1], None)\nos._exit(0)\n")
    p = subprocess.run([sys.executable, "-c", code, str(root), marker], capture_output=True,
                       timeout=30)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    _gone(marker.encode())


def test_start_of_a_running_container_leaves_no_supervisor(cli, image):
    """``start`` forks a supervisor first thing; the container runs
    already, so the command cancels it."""
    p = cli("run", "-d", "--name", "web", "--network", "none", image, "/bin/sh", "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    p = cli("start", "web")
    assert p.returncode == 0 and p.stdout == "web\n", p.stderr
    _gone(b"start\0web")
    assert cli("stop", "web").returncode == 0
    assert cli("rm", cid).returncode == 0


@pytest.mark.unit
def test_the_go_names_container_root_and_factory():
    from volmerge.runtime.supervisor import _told_to_go

    def told(data: bytes) -> list[str] | None:
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        return _told_to_go(r)

    assert told(b"go\n") == []  # a spawned supervisor's: its command line names them
    assert told(b"go\0abc\0/var/lib/x y\0m:f") == ["abc", "/var/lib/x y", "m:f"]
    assert told(b"go\0abc\0/r\0") == ["abc", "/r", ""]
    assert told(b"") is None  # cancelled, or the command died
    assert told(b"nothing") is None
