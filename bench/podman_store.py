"""A throw-away podman for the benchmarks, on a bridge with published ports.

Like tests/podman.py (its own --root, --runroot, --tmpdir, containers.conf
and storage.conf, cgroupfs, runc, events in a file), but with podman's
default network: a CNI bridge and port forwarding, as users run it.  Call
it only inside a private mount and network namespace (the benchmark
re-executes itself under ``unshare --net --mount --propagation private``):
``PodmanStore`` mounts an empty tmpfs over each of podman's and CNI's
default state directories (IP leases, netns files, network configs, the
blob-info cache), so the host's podman and CNI state is neither read nor
written, and the bridge, veths and iptables rules die with the network
namespace.  ``close()`` removes containers and volumes, waits for conmon,
unmounts and deletes everything it made; a default state directory that
did not exist is made for the run (to mount over it) and removed after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.podman import ULIMITS, private_store

# Where podman 4 and CNI keep state by default (tests/fixtures/test_podman_helper.py)
DEFAULT_STATE = ("/var/lib/cni", "/run/netns", "/etc/cni/net.d", "/var/lib/containers",
                 "/run/containers", "/run/libpod", "/etc/containers/networks")
# podman would otherwise take the limits of the (large) ones of this process
RUN_OPTS = ULIMITS


class PodmanError(RuntimeError):
    pass


def _rmdirs(d: str, top: str) -> None:
    """Remove the empty directory ``d`` and its parents up to ``top``."""
    while True:
        try:
            os.rmdir(d)
        except OSError:
            return
        if d == top:
            return
        d = os.path.dirname(d)


class PodmanStore:
    """podman on a store of its own below ``base`` (made here, removed by close())."""

    def __init__(self, base: Path, driver: str = "overlay") -> None:
        self.base, self.driver = base, driver
        self.version = ""  # podman's, once asked
        self._shadowed: list[str] = []
        self._made: list[tuple[str, str]] = []  # (made, its topmost new parent)
        self.runroot, self.env, argv = private_store(base, driver, prefix="vm-pb-", network=True)
        self.argv = ["podman", *argv]
        try:
            self._shadow_default_state()
        except BaseException:
            self.close(clear=False)
            raise

    def _shadow_default_state(self) -> None:
        for d in DEFAULT_STATE:
            if not os.path.isdir(d):
                top = d
                while not os.path.exists(os.path.dirname(top)):
                    top = os.path.dirname(top)
                os.makedirs(d)
                self._made.append((d, top))
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "bench-podman", d],
                           check=True)
            self._shadowed.append(d)

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        """``podman ARGS`` on this store: a fresh process, as typed."""
        p = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                           errors="replace", timeout=timeout)
        if check and p.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} -> {p.returncode}: "
                              f"{p.stderr.strip()[-800:]}")
        return p

    def clear(self) -> None:
        """Every container and volume removed (the images stay)."""
        self("rm", "-a", "-f", "-t", "0", check=False)
        self("volume", "rm", "-a", "-f", check=False)

    def close(self, clear: bool = True) -> None:
        from volmerge.runtime import sys as rsys

        try:
            if clear:
                self.clear()
            # conmon outlives `podman rm` a little and writes below the store
            deadline = time.monotonic() + 10
            while self._processes() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for d in (self.base, self.runroot):
                rsys.umount_tree(d)
                shutil.rmtree(d, ignore_errors=True)
            for d in reversed(self._shadowed):
                if subprocess.run(["umount", d], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", d], check=False)
            for d, top in self._made:
                _rmdirs(d, top)

    def _processes(self) -> list[int]:
        """Processes (conmon, runc) whose command line names this store."""
        needles = (str(self.base).encode(), str(self.runroot).encode())
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if int(pid) != os.getpid() and any(n in cmd for n in needles):
                out.append(int(pid))
        return out
