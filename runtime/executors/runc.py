"""The runc executor: ``runc --root <store>/runc run --bundle B <id>``.

``runc run`` stays in the foreground, passes its stdio to the container,
proxies the signals it receives, returns the container's exit code and
deletes the container when it exits, so the caller only has to wait on it.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from ..errors import NotDone
from .base import Stdio, read_pid_file


class RuncRunning:
    def __init__(self, proc: subprocess.Popen[bytes], pid_file: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pid_file = pid_file

    def wait(self) -> int:
        rc = self.proc.wait()
        return 128 - rc if rc < 0 else rc

    def poll(self) -> int | None:
        rc = self.proc.poll()
        return None if rc is None else (128 - rc if rc < 0 else rc)

    def init_pid(self, timeout: float = 5.0) -> int | None:
        return read_pid_file(self.pid_file, lambda: self.proc.poll() is None, timeout)


class RuncExecutor:
    name = "runc"

    def __init__(self, root: Path) -> None:
        self.state_root = Path(root) / "runc"

    def _cmd(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state_root), *args]

    def start(self, cid: str, bundle: Path, stdio: Stdio) -> RuncRunning:
        self.state_root.mkdir(mode=0o700, exist_ok=True)
        pid_file = bundle.parent / "init.pid"
        pid_file.unlink(missing_ok=True)
        proc = subprocess.Popen(
            self._cmd("run", "--bundle", str(bundle), "--pid-file", str(pid_file), cid),
            stdin=stdio.stdin, stdout=stdio.stdout, stderr=stdio.stderr,
        )
        return RuncRunning(proc, pid_file)

    def kill(self, cid: str, init_pid: int, sig: int) -> None:
        subprocess.run(self._cmd("kill", cid, str(sig)), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)

    def exec(self, cid: str, init_pid: int, argv: list[str], *, env: list[str], uid: int,
             gid: int, cwd: str, stdio: Stdio, timeout: float | None = None, tty: bool = False) -> int:
        cmd = self._cmd("exec", "--user", f"{uid}:{gid}", "--cwd", cwd, *(["--tty"] if tty else []))
        for e in env:
            cmd += ["--env", e]
        cmd += [cid, *argv]
        try:
            # the container's umask (spec.py), not the caller's: runc exec passes its own on
            rc = subprocess.run(cmd, stdin=stdio.stdin, stdout=stdio.stdout, umask=0o022,
                                stderr=stdio.stderr, check=False, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"exec in {cid} timed out") from None
        return 128 - rc if rc < 0 else rc

    def pause(self, cid: str) -> None:
        self._simple("pause", cid)

    def unpause(self, cid: str) -> None:
        self._simple("resume", cid)

    def _simple(self, verb: str, cid: str) -> None:
        p = subprocess.run(self._cmd(verb, cid), capture_output=True, text=True, check=False)
        if p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or [f"runc {verb} failed"])[-1]
            raise NotDone(f"runc {verb} {cid}: {msg}")

    def cleanup(self, cid: str) -> None:
        if (self.state_root / cid).exists():
            subprocess.run(self._cmd("delete", "--force", cid), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        with contextlib.suppress(OSError):
            from ..cgroups import Cgroup, cgroups_path

            Cgroup(cgroups_path(cid)).remove(timeout=2)
