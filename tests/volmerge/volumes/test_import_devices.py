"""`volume import` of a hostile tar: no device node is ever created, and no
set-user-ID file lands in a volume (issue 14, 4)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from volmerge.runtime.store import Store
from volmerge.volumes import VolumeManager


def _tar(path: Path, members: list[tuple[str, bytes, int, int]]) -> Path:
    """members: (name, type, mode, device major) -> a tar file."""
    with tarfile.open(path, "w") as t:
        for name, kind, mode, major in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = kind, mode
            data = b""
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                ti.devmajor, ti.devminor = major, 0
            elif kind == tarfile.REGTYPE:
                data = b"#!/bin/sh\necho hi\n"
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def _no_devices(top: Path) -> None:
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev) and not stat.S_ISBLK(st.st_mode), f


@pytest.mark.parametrize("kind,name", [(tarfile.CHRTYPE, "dev/sda"), (tarfile.BLKTYPE, "dev/vda")])
def test_a_device_node_refuses_the_import(  # type: ignore[no-untyped-def]
        cli, root: Path, tmp_path: Path, kind: bytes, name: str) -> None:
    assert cli("volume", "create", "other").returncode == 0
    tar = _tar(tmp_path / "evil.tar", [
        ("dev", tarfile.DIRTYPE, 0o755, 0),
        ("data", tarfile.REGTYPE, 0o644, 0),
        (name, kind, 0o666, 8),
        ("zz", tarfile.REGTYPE, 0o644, 0),
    ])
    p = cli("volume", "import", "evil", str(tar))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("volmerge: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert f"{name} is a device node" in p.stderr and "nothing imported" in p.stderr
    assert cli("volume", "ls", "-q").stdout.split() == ["other"]
    assert os.listdir(root / "tmp") == []
    _no_devices(root)


def test_setuid_bits_are_cleared_and_other_entries_kept(cli, root: Path, tmp_path: Path) -> None:
    tar = _tar(tmp_path / "in.tar", [
        ("bin", tarfile.DIRTYPE, 0o755, 0),
        ("bin/su", tarfile.REGTYPE, 0o4755, 0),
        ("bin/wall", tarfile.REGTYPE, 0o2755, 0),
        ("shared", tarfile.DIRTYPE, 0o2775, 0),
        ("shared/fifo", tarfile.FIFOTYPE, 0o600, 0),
        ("plain", tarfile.REGTYPE, 0o640, 0),
    ])
    p = cli("volume", "import", "v", str(tar))
    assert p.returncode == 0, p.stderr
    assert p.stderr == "volmerge: warning: set-user-ID/set-group-ID bits cleared on 2 files " \
                       "(first: bin/su)\n"
    st = Store(root)
    try:
        with VolumeManager(st).view("v") as v:
            assert stat.S_IMODE(os.lstat(v / "bin/su").st_mode) == 0o755
            assert stat.S_IMODE(os.lstat(v / "bin/wall").st_mode) == 0o755
            assert stat.S_IMODE(os.lstat(v / "shared").st_mode) == 0o2775  # group inheritance kept
            assert stat.S_ISFIFO(os.lstat(v / "shared/fifo").st_mode)
            assert stat.S_IMODE(os.lstat(v / "plain").st_mode) == 0o640
    finally:
        st.close()
    # a clean tar: no warning
    ok = _tar(tmp_path / "ok.tar", [("f", tarfile.REGTYPE, 0o644, 0)])
    p = cli("volume", "import", "w", str(ok))
    assert p.returncode == 0 and p.stderr == ""
