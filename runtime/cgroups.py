"""Control groups for the builtin executor: memory and pids limits, freezer.

runc manages its own cgroups from the spec's ``cgroupsPath``; the builtin
executor uses this module with the same path, so both leave the same
footprint (``/sys/fs/cgroup/<controller>/volmerge/<id>`` on cgroup v1, the
hybrid layout of this host; ``/sys/fs/cgroup/volmerge/<id>`` on a pure v2
host).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The parent of every container cgroup; a test session sets its own so that
# its leak checks never see containers of another volmerge on the machine.
PARENT = os.environ.get("VOLMERGE_CGROUP_PARENT", "volmerge")
if not PARENT or not all(ch.isalnum() or ch in "-_." for ch in PARENT) or PARENT in (".", ".."):
    PARENT = "volmerge"
V1_CONTROLLERS = ("memory", "pids", "freezer", "devices")
# Devices a container may use (runc's default allow list).
ALLOWED_DEVICES = ["c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"]


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroups_path(container_id: str) -> str:
    """The spec's ``linux.cgroupsPath`` for a container."""
    return f"/{PARENT}/{container_id}"


class Cgroup:
    def __init__(self, rel: str) -> None:
        self.rel = rel.strip("/")
        self.v2 = is_v2()

    def dirs(self) -> list[Path]:
        if self.v2:
            return [CGROUP_ROOT / self.rel]
        return [CGROUP_ROOT / c / self.rel for c in V1_CONTROLLERS if (CGROUP_ROOT / c).is_dir()]

    def _dir(self, controller: str) -> Path | None:
        if self.v2:
            return CGROUP_ROOT / self.rel
        d = CGROUP_ROOT / controller / self.rel
        return d if (CGROUP_ROOT / controller).is_dir() else None

    def create(self, *, memory: int | None = None, pids: int | None = None) -> None:
        if self.v2:
            self._enable_v2_controllers()
        for d in self.dirs():
            d.mkdir(parents=True, exist_ok=True)
        if not self.v2 and (dev := self._dir("devices")) is not None:
            _write(dev / "devices.deny", "a")
            for rule in ALLOWED_DEVICES:
                _write(dev / "devices.allow", rule)
        if memory:
            if self.v2:
                _write(CGROUP_ROOT / self.rel / "memory.max", str(memory))
                _write(CGROUP_ROOT / self.rel / "memory.swap.max", "0", optional=True)
            elif (mem := self._dir("memory")) is not None:
                _write(mem / "memory.limit_in_bytes", str(memory))
                _write(mem / "memory.memsw.limit_in_bytes", str(memory), optional=True)
        if pids and (pid_dir := self._dir("pids")) is not None:
            _write(pid_dir / "pids.max", str(pids))

    def _enable_v2_controllers(self) -> None:
        parts = self.rel.split("/")
        cur = CGROUP_ROOT
        for p in parts:
            try:
                _write(cur / "cgroup.subtree_control", "+memory +pids", optional=True)
            except OSError:
                pass
            cur = cur / p
            cur.mkdir(exist_ok=True)

    def add(self, pid: int) -> None:
        """Move ``pid`` (0: the calling process) into every hierarchy."""
        for d in self.dirs():
            _write(d / "cgroup.procs", str(pid))

    def _all_dirs(self) -> list[Path]:
        """Every hierarchy that has the group (runc creates it in all of them)."""
        if self.v2:
            return self.dirs()
        return [p / self.rel for p in CGROUP_ROOT.iterdir() if (p / self.rel).is_dir()]

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self._all_dirs():
            try:
                out |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return sorted(out)

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        if self.v2:
            _write(CGROUP_ROOT / self.rel / "cgroup.freeze", "1" if frozen else "0")
            return
        d = self._dir("freezer")
        if d is None:
            raise OSError(errno.ENOTSUP, "no freezer cgroup on this host")
        _write(d / "freezer.state", "FROZEN" if frozen else "THAWED")
        want = "FROZEN" if frozen else "THAWED"
        if (d / "freezer.state").read_text().strip() == want:
            return
        from .polling import wait_until

        wait_until(lambda: (d / "freezer.state").read_text().strip() == want, timeout=1.0,
                   interval=0.005, max_interval=0.005)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left inside and remove the group from every hierarchy."""
        deadline = time.monotonic() + timeout
        for d in self._all_dirs():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                from .polling import retry

                self._kill_all()
                retry(functools.partial(_rmdir_gone_ok, d), when=_busy,
                      timeout=max(0.0, deadline - time.monotonic()), interval=0.01,
                      max_interval=0.01, between=self._kill_all)

    def _kill_all(self) -> None:
        """Thaw (v1) and SIGKILL what keeps the group busy."""
        if not self.v2:
            fz = self._dir("freezer")
            if fz is not None and fz.exists():
                _write(fz / "freezer.state", "THAWED", optional=True)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EBUSY


def _rmdir_gone_ok(d: Path) -> None:
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass


def leftovers() -> list[str]:
    """Container cgroups that exist now (what a leak check looks at)."""
    out: list[str] = []
    bases = [CGROUP_ROOT / PARENT] if is_v2() else \
        [p / PARENT for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.is_dir() else []
    for b in bases:
        try:
            out += [str(b / e) for e in os.listdir(b) if (b / e).is_dir()]
        except OSError:
            pass
    return sorted(out)


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        if not optional:
            raise


def remove_parent() -> None:
    """Remove the (empty) parent cgroups, e.g. at the end of a test session."""
    bases = [CGROUP_ROOT / PARENT] if is_v2() else \
        [p / PARENT for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.is_dir() else []
    for b in bases:
        try:
            os.rmdir(b)
        except OSError:
            pass
