"""Compaction: squashed layers give the same merged view (whiteouts, opaque
dirs, modes, owners, xattrs, hard links, sparse files), tagged snapshots stay
restorable, and volmerge compacts by itself before passing the kernel's
limit on overlay lower layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from volmerge.volumes import VolumeManager
from volmerge.volumes.history import max_lowers

from .helpers import digest, seed_dir, write


def _xattrs(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = {
                k: os.getxattr(p, k, follow_symlinks=False)
                for k in os.listxattr(p, follow_symlinks=False) if not k.startswith("trusted.overlay")
            }
    return out


def _generation(vm: VolumeManager, seed: Path, tag: str | None, ops) -> None:  # type: ignore[no-untyped-def]
    merged = vm.attach("v", "c", seed)
    ops(merged)
    vm.detach("v", "c")
    vm.snapshot("v", tag=tag)


def test_compact_keeps_every_view(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)

    def g1(m: Path) -> None:
        write(m, {"data/old": None, "etc/keep.conf": None, "new/one": "1"})
        os.chmod(m / "etc/app.conf", 0o600)
        os.chown(m / "etc/app.conf", 1234, 4321)
        os.setxattr(m / "new/one", "user.note", b"hello")

    def g2(m: Path) -> None:
        write(m, {"data/old/c.txt": "recreated dir is opaque", "new/two": "2"})
        os.link(m / "new/two", m / "new/two-link")
        with open(m / "sparse", "wb") as f:
            f.truncate(64 << 20)
            f.seek(32 << 20)
            f.write(b"middle")

    def g3(m: Path) -> None:
        write(m, {"new/one": None, "etc/app.conf": "port = 1\n", "new": None})
        write(m, {"new/three": "3"})  # new is opaque now

    def g4(m: Path) -> None:
        write(m, {"late": "x"})

    _generation(vm, seed, None, g1)
    _generation(vm, seed, "mid", g2)
    _generation(vm, seed, None, g3)
    _generation(vm, seed, None, g4)
    write(vm.live_upper("v"), {"live-only": "y"})
    views = {}
    for at in ("mid", None):
        with vm.view("v", at) as v:
            views[at] = (digest(v), _xattrs(v))
    before, after = vm.compact("v")
    assert (before, after) == (5, 3)  # seed + g1..g4 -> seed + (g1+g2 "mid") + (g3+g4)
    for at in ("mid", None):
        with vm.view("v", at) as v:
            assert (digest(v), _xattrs(v)) == views[at]
    # sparse file still sparse, hard link still one inode
    mid = vm.get("v").layers[1]
    assert mid.tag == "mid"
    layer = Path(mid.path)
    assert os.lstat(layer / "sparse").st_blocks * 512 < 1 << 20
    assert os.lstat(layer / "new/two").st_ino == os.lstat(layer / "new/two-link").st_ino
    vm.rollback("v", to="mid")
    with vm.view("v") as v:
        assert (digest(v), _xattrs(v)) == views["mid"]


def test_auto_compaction_past_the_kernel_layer_limit(vm: VolumeManager) -> None:
    """Real limit (500 lower layers on this kernel): 510 snapshots fit."""
    limit = max_lowers()
    assert limit == 500
    vm.create("v")
    expected = {}
    for i in range(limit + 10):
        write(vm.live_upper("v"), {f"f{i % 7}": str(i)})
        tag = f"t{i}" if i % 100 == 0 else None
        snap = vm.snapshot("v", tag=tag)
        if tag:
            expected[tag] = {f"f{j % 7}": str(j) for j in range(i + 1)}
        if snap.compacted:
            compacted_at = i
    assert compacted_at == limit - 1  # seed + 499 generations + 1 would be 501
    m = vm.get("v", sizes=False)
    assert len(m.layers) - 1 <= limit  # every frozen layer is a lower
    merged = vm.attach("v", "c", None)  # and the real overlay mounts
    try:
        assert (merged / "f0").read_text() == str(limit + 9 - (limit + 9) % 7)
    finally:
        vm.detach("v", "c")
    for tag, files in expected.items():
        with vm.view("v", tag) as v:
            assert {p.name: p.read_text() for p in v.iterdir()} == files


@pytest.mark.parametrize("n", [3])
def test_compact_with_only_tagged_snapshots_changes_nothing(vm: VolumeManager, n: int) -> None:
    vm.create("v")
    for i in range(n):
        write(vm.live_upper("v"), {"f": str(i)})
        vm.snapshot("v", tag=f"t{i}")
    assert vm.compact("v") == (n + 1, n + 1)
