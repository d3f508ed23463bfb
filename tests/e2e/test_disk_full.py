"""A full disk at each step that writes (issue 20, point 1): the store on a
size-limited tmpfs made by the test, filled with a filler file until only a
few bytes are free.  Each step ends with one line naming the file system,
exit 1, the store and the live data intact, and the same command works once
the filler is deleted."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import requires_root

from . import conftest as _c
from .conftest import APP, _app_image, volume_digest

cli_session = _c.cli_session

pytestmark = requires_root

SIZE_MB = 48
UPGRADE = ("--health-timeout", "0.3", "--stop-timeout", "2")


class Disk:
    """A tmpfs of SIZE_MB for one store: ``fill(left)`` leaves ``left`` bytes
    free (a filler file outside the store root), ``free()`` deletes it."""

    def __init__(self, mnt: Path) -> None:
        self.mnt = mnt
        self.root = mnt / "r"
        self.filler = mnt / "filler"

    def available(self) -> int:
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def fill(self, left: int = 0) -> None:
        self.free()
        n = self.available() - left
        if n > 0:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, n)
            finally:
                os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    from volmerge.runtime import sys as rsys

    mnt = tmp_path / "d"
    mnt.mkdir()
    rsys.mount("tmpfs", mnt, "tmpfs", 0, f"size={SIZE_MB}m,mode=0700")
    try:
        yield Disk(mnt)
    finally:
        rsys.umount_tree(mnt)


@pytest.fixture(scope="module")
def app_images(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("imgs")
    return [_app_image(out / f"app{v}.tar", v) for v in (1, 2)]


@pytest.fixture
def disk(tmp_path: Path, own_netns) -> Iterator[Disk]:
    with small_disk(tmp_path) as d:
        yield d


@pytest.fixture
def vm(disk: Disk):
    with cli_session(disk.root) as run:
        yield run


def no_space(p, disk: Disk) -> None:
    """Exit 1 and one line naming the store's file system."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("volmerge: error: no space left on "), p.stderr
    assert f"{disk.mnt} (tmpfs, " in lines[-1] and "Traceback" not in p.stderr, p.stderr
    assert sum(ln.startswith("volmerge: error: ") for ln in lines) == 1, p.stderr


def leftovers(disk: Disk) -> list[str]:
    """Work in progress left in the store (its tmp/ is swept on every open)."""
    return sorted(os.listdir(disk.root / "tmp"))


@pytest.fixture
def app(disk: Disk, vm, app_images):
    """Both app images loaded; container ``a`` (v1) running with volume ``v``
    holding some data; the journal's table made (by ``recover``)."""
    for img in app_images:
        vm("image", "load", str(img), check=True)
    vm("run", "-d", "--name", "a", "-v", "v:/data", APP[1], check=True)
    vm("exec", "a", "sh", "-c", "head -c 300000 /dev/urandom > /data/blob && "
       "sed -i 's/\"a\": 1/\"a\": 7/' /data/settings.json", check=True)
    vm("recover", check=True)
    return vm


def test_image_load(disk: Disk, vm, app_images) -> None:
    vm("image", "load", str(app_images[0]), check=True)  # the store exists
    disk.fill(100_000)
    no_space(vm("image", "load", str(app_images[1])), disk)
    assert vm("image", "inspect", APP[2]).returncode != 0
    vm("image", "inspect", APP[1], check=True)
    assert leftovers(disk) == []
    disk.free()
    vm("image", "load", str(app_images[1]), check=True)
    vm("run", "--rm", APP[2], "cat", "/data/added.txt", check=True)


def test_first_command_on_a_full_disk(disk: Disk, vm, app_images) -> None:
    """Even the state database's creation: one line, not an SQLite traceback."""
    disk.root.mkdir()
    disk.fill(0)
    no_space(vm("image", "load", str(app_images[0])), disk)
    disk.free()
    vm("image", "load", str(app_images[0]), check=True)


def test_volume_snapshot(disk: Disk, app) -> None:
    vm = app
    vm("stop", "a", check=True)
    before = volume_digest(disk.root, "v")
    disk.fill(0)
    p = vm("volume", "snapshot", "v")
    disk.free()
    if p.returncode != 0:
        no_space(p, disk)
    assert volume_digest(disk.root, "v") == before
    vm("volume", "snapshot", "v", check=True)
    assert volume_digest(disk.root, "v") == before


def test_upgrade_merge_into_the_upper(disk: Disk, app) -> None:
    vm = app
    before = volume_digest(disk.root, "v")
    disk.fill(50_000)
    p = vm("upgrade", "a", "--to", APP[2], *UPGRADE, env={"VOLMERGE_LOG": "info"})
    no_space(p, disk)
    assert "snapshot volume v" in p.stderr  # it got as far as the merge (the service stopped)
    assert leftovers(disk) == []
    disk.free()
    assert volume_digest(disk.root, "v") == before
    ps = vm("ps", "--json").stdout
    assert APP[1] in ps and APP[2] not in ps
    vm("exec", "a", "true", check=True)  # still running
    vm("upgrade", "a", "--to", APP[2], *UPGRADE, check=True)
    out = vm("exec", "a", "cat", "/data/settings.json", "/data/added.txt", check=True).stdout
    assert '"a": 7' in out and '"c": 4' in out and "new in v2" in out


def test_volume_export_and_import(disk: Disk, app) -> None:
    vm = app
    vm("stop", "a", check=True)
    before = volume_digest(disk.root, "v")
    tar = disk.mnt / "v.tar"
    disk.fill(50_000)
    no_space(vm("volume", "export", "v", "-o", str(tar)), disk)
    assert not tar.exists() and [e for e in os.listdir(disk.mnt) if e != "filler" and e != "r"] == []
    disk.free()
    vm("volume", "export", "v", "-o", str(tar), check=True)
    disk.fill(50_000)
    p = vm("volume", "import", "w", str(tar))
    no_space(p, disk)
    assert "needed ~" in p.stderr
    assert vm("volume", "ls", "-q").stdout.split() == ["v"]
    disk.free()
    vm("volume", "import", "w", str(tar), check=True)
    assert volume_digest(disk.root, "w") == before
