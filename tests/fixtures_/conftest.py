"""Helpers for the fixture-image tests: skopeo and a throw-away podman store."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PODMAN_RUN_OPTS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def skopeo_inspect(archive: Path, raw: bool = False) -> dict:
    args = ["skopeo", "inspect", *(["--raw"] if raw else []), f"oci-archive:{archive}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def skopeo_config(archive: Path) -> dict:
    proc = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{archive}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class Podman:
    """podman with its storage in a temp dir; ``close()`` removes everything."""

    def __init__(self, base: Path) -> None:
        self.base = base
        # podman refuses a runroot longer than 50 characters: keep it short.
        self.runroot = Path(tempfile.mkdtemp(prefix="vm-pm-", dir="/tmp"))
        self.args = ["podman", "--root", str(base / "root"), "--runroot", str(self.runroot),
                     "--cgroup-manager=cgroupfs", "--runtime", "runc",
                     "--tmpdir", str(base / "libpodtmp")]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.args, *args], capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check:
            assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
        return proc

    def close(self) -> None:
        self("rm", "-a", "-f", check=False)
        self("system", "reset", "-f", check=False)
        from runtime import sys as rsys

        rsys.umount_tree(self.base)
        rsys.umount_tree(self.runroot)
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podman(tmp_path: Path):
    p = Podman(tmp_path / "podman")
    yield p
    p.close()
