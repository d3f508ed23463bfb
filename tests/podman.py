"""podman and skopeo for the interop tests, independent of the machine's state.

Every podman call of the suite goes through ``Podman.__call__``: its own
storage, run and temp directories under the test's tmp dir, its own
containers.conf, storage.conf and (empty) network config directory, no
network (``--network none``: no bridge, no /run/netns, no nft rules, no CNI
state in /var/lib/cni), events in a file (not the journal).  So a machine
where podman never ran and one where it did behave alike, the host's
podman images, containers and networks are never seen or touched, and
``close()`` leaves nothing: containers removed, mounts undone, directories
deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# No network; limits that podman would otherwise take from the (large) ones
# of the test process.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
RUN_OPTS = ("--network", "none", *ULIMITS)


def podman_conf(base: Path, runroot: Path, driver: str, *,
                network: bool = True) -> tuple[str, str]:
    """containers.conf and storage.conf of a podman store below ``base``:
    cgroupfs, runc, events in a file, its own network configuration;
    ``network`` False: no network for any container (``netns = "none"``)."""
    containers = (
        "[engine]\n"
        'lock_type = "file"\n'
        f'tmp_dir = "{base}/tmp"\n'
        f'image_copy_tmp_dir = "{base}/vartmp"\n'
        'cgroup_manager = "cgroupfs"\n'
        'runtime = "runc"\n'
        'events_logger = "file"\n'
        "[network]\n"
        f'network_config_dir = "{base}/networks"\n'
        + ("" if network else '[containers]\nnetns = "none"\n')
    )
    storage = (f'[storage]\ndriver = "{driver}"\ngraphroot = "{base}/root"\n'
               f'runroot = "{runroot}"\n')
    return containers, storage


def private_store(base: Path, driver: str, *, prefix: str,
                  network: bool) -> tuple[Path, dict[str, str], list[str]]:
    """Make a podman store below ``base`` (the tests' and the benchmarks'):
    its directories, its configuration files and a runroot of its own in
    /run; (the runroot, the environment and the global options every
    ``podman`` call of it takes)."""
    for sub in ("root", "tmp", "vartmp", "networks"):
        (base / sub).mkdir(parents=True)
    # podman refuses a runroot longer than 50 characters and conmon's
    # sockets live below it: a short directory of its own.
    runroot = Path(tempfile.mkdtemp(prefix=prefix, dir="/run"))
    containers, storage = podman_conf(base, runroot, driver, network=network)
    (base / "containers.conf").write_text(containers)
    (base / "storage.conf").write_text(storage)
    env = dict(os.environ, CONTAINERS_CONF=str(base / "containers.conf"),
               CONTAINERS_STORAGE_CONF=str(base / "storage.conf"), TMPDIR=str(base / "vartmp"))
    argv = ["--root", str(base / "root"), "--runroot", str(runroot), "--tmpdir", str(base / "tmp"),
            "--storage-driver", driver, "--network-config-dir", str(base / "networks"),
            "--cgroup-manager=cgroupfs", "--runtime", "runc", "--events-backend", "file"]
    return runroot, env, argv


class Podman:
    """A throw-away podman store below ``base``; ``close()`` removes it."""

    def __init__(self, base: Path, driver: str = "vfs") -> None:
        self.base = base
        self.runroot, self.env, self.globals = private_store(base, driver, prefix="vm-pm-",
                                                             network=False)

    def __call__(self, *args: str, tool: str = "podman", check: bool = True,
                 timeout: float = 180, input: str | None = None) -> subprocess.CompletedProcess:
        """``podman ARGS`` (or ``skopeo ARGS`` with ``tool="skopeo"``) on this store."""
        argv = [tool, *(self.globals if tool == "podman" else ()), *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              errors="replace", timeout=timeout, input=input)
        if check:
            assert proc.returncode == 0, f"{tool} {' '.join(args)}: {proc.stderr}"
        return proc

    def run(self, *args: str, rm: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        """``podman run [--rm] --network none --ulimit ... ARGS``."""
        return self("run", *(["--rm"] if rm else []), *RUN_OPTS, *args, check=check)

    def close(self) -> None:
        from volmerge.runtime import sys as rsys

        self("rm", "-a", "-f", "-t", "0", check=False)
        # conmon outlives `podman rm` a little and writes below the store as
        # it exits: wait for it before deleting.
        deadline = time.monotonic() + 10
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        for d in (self.base, self.runroot):
            rsys.umount_tree(d)
            shutil.rmtree(d)

    def _processes(self) -> set[int]:
        """Processes (conmon, the containers' runc) whose command line names this store."""
        from tests.procs import processes_whose

        return processes_whose("cmdline", str(self.base).encode(), str(self.runroot).encode())


def skopeo(*args: str) -> dict:
    """``skopeo ARGS`` parsed as JSON (inspecting an archive needs no store)."""
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def skopeo_inspect(archive: Path, raw: bool = False) -> dict:
    return skopeo("inspect", *(["--raw"] if raw else []), f"oci-archive:{archive}")


def skopeo_config(archive: Path) -> dict:
    return skopeo("inspect", "--config", f"oci-archive:{archive}")


@pytest.fixture
def podman(tmp_path: Path):
    """A ``Podman`` on a fresh store under the test's tmp dir, closed after it."""
    if not (shutil.which("podman") and shutil.which("skopeo")):
        # CI installs them (Makefile DEB_PACKAGES): missing there is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "podman and skopeo are needed (Makefile DEB_PACKAGES)")
    p = Podman(tmp_path / "podman")
    yield p
    p.close()
