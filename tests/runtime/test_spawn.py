"""runc is started by posix_spawn (runtime/executors/runc.py: spawn), not
subprocess: the same child as ``subprocess.Popen`` gave it."""

from __future__ import annotations

import os
import signal

import pytest

from volmerge.runtime.executors.base import Stdio
from volmerge.runtime.executors.runc import RuncRunning, spawn


def _wait(pid: int) -> int:
    return RuncRunning(pid, pid_file=None).wait()  # type: ignore[arg-type]


def test_spawn_gives_stdio_and_closes_other_descriptors(tmp_path):
    out = open(tmp_path / "out", "wb")
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_w, True)  # as a caller's inherited descriptor would be
    try:
        script = ("echo hello; echo oops >&2; "
                  f"[ -e /proc/self/fd/{leaked_w} ] && echo leaked; "
                  "grep -E '^SigIgn' /proc/self/status")
        pid = spawn(["sh", "-c", script], Stdio(None, out, out.fileno()))
        assert _wait(pid) == 0
    finally:
        out.close()
        os.close(leaked_r)
        os.close(leaked_w)
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines[:2] == ["hello", "oops"]
    assert "leaked" not in lines
    ignored = int(lines[-1].split()[1], 16)  # Python ignores SIGPIPE; the child must not
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_spawn_swapped_low_descriptors(tmp_path):
    """stdout on the caller's stderr and stderr on its stdout: a dup2 must
    not overwrite a source before it is used."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)  # our stdout is the pipe
    try:
        pid = spawn(["sh", "-c", "echo to-stdout; echo to-stderr >&2"], Stdio(None, 2, 1))
        code = _wait(pid)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    assert code == 0
    assert got == "to-stderr\n"  # the child's stderr went to our stdout (the pipe)


def test_spawn_exit_codes_and_a_missing_program():
    assert _wait(spawn(["sh", "-c", "exit 3"], Stdio())) == 3
    running = RuncRunning(spawn(["sh", "-c", "kill -KILL $$"], Stdio()), pid_file=None)  # type: ignore[arg-type]
    assert running.wait() == 128 + 9
    assert running.poll() == 128 + 9  # reaped once, remembered
    with pytest.raises(FileNotFoundError):
        spawn(["volmerge-no-such-program"], Stdio())
