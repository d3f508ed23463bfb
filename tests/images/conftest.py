"""Fixtures for the image store tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.images import ImageStore
from runtime.store import Store


@pytest.fixture
def images(store: Store) -> ImageStore:
    return ImageStore(store)


def store_is_empty(root: Path) -> None:
    """Nothing partial anywhere in the store after a refused load."""
    for sub in ("layers", "tmp", "blobs/sha256", "l"):
        left = os.listdir(root / sub)
        assert left == [], f"{sub} not empty: {left}"
    import sqlite3

    db = sqlite3.connect(root / "state.db")
    try:
        for table in ("images", "layers", "image_layers", "tags"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        db.close()


class Podman:
    """podman and skopeo on a private storage under the test's tmp_path: vfs
    driver (no mounts), file locks (nothing in /dev/shm), no network."""

    def __init__(self, base: Path) -> None:
        import tempfile

        self.base = base
        for sub in ("root", "tmp", "vartmp"):
            (base / sub).mkdir(parents=True)
        # conmon's sockets live below the runroot: with a long runroot path
        # (pytest's tmp_path) `podman run` waits 20 s for conmon; keep it short.
        self.runroot = Path(tempfile.mkdtemp(prefix="vm-", dir="/run"))
        (base / "containers.conf").write_text(
            "[engine]\n"
            'lock_type = "file"\n'
            f'tmp_dir = "{base}/tmp"\n'
            f'image_copy_tmp_dir = "{base}/vartmp"\n'
            'cgroup_manager = "cgroupfs"\n'
            'runtime = "runc"\n'
            'events_logger = "file"\n'
            "[containers]\n"
            'netns = "none"\n'
        )
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{base}/root"\nrunroot = "{self.runroot}"\n'
        )
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=str(base / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(base / "storage.conf"),
            TMPDIR=str(base / "vartmp"),
        )

    def __call__(self, *args: str, tool: str = "podman", input: bytes | None = None):  # type: ignore[no-untyped-def]
        import subprocess

        r = subprocess.run([tool, *args], env=self.env, capture_output=True, timeout=180, input=input)
        assert r.returncode == 0, f"{tool} {' '.join(args)}: {r.stderr.decode(errors='replace')}"
        return r.stdout.decode(errors="replace")

    def run(self, image: str, *cmd: str) -> str:
        return self("--cgroup-manager=cgroupfs", "--runtime", "runc", "run", "--rm",
                    "--network", "none", "--ulimit", "nofile=1024:1024",
                    "--ulimit", "nproc=1024:1024", image, *cmd)

    def close(self) -> None:
        from runtime import sys as rsys

        import shutil

        for d in (self.base, self.runroot):
            rsys.umount_tree(d)
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podman(tmp_path: Path):
    import shutil

    if not (shutil.which("podman") and shutil.which("skopeo")):
        pytest.skip("podman and skopeo are needed (Makefile DEB_PACKAGES)")
    p = Podman(tmp_path / "podman")
    yield p
    p.close()
