"""The busybox fixture: a real OCI archive that skopeo and podman accept."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from volmerge.fixtures import REFS, image_archive

from .conftest import skopeo_config, skopeo_inspect


def test_busybox_archive_is_read_by_skopeo(tmp_path: Path) -> None:
    archive = image_archive("busybox", tmp_path / "cache")
    info = skopeo_inspect(archive)
    assert len(info["Layers"]) == 1
    cfg = skopeo_config(archive)
    assert cfg["config"]["Cmd"] == ["/bin/sh"]
    assert any(e.startswith("PATH=") for e in cfg["config"]["Env"])
    assert cfg["rootfs"]["diff_ids"][0] == info["Layers"][0]  # uncompressed: digest == diff_id


def test_busybox_layer_contents(tmp_path: Path) -> None:
    archive = image_archive("busybox", tmp_path / "cache")
    raw = skopeo_inspect(archive, raw=True)
    digest = raw["layers"][0]["digest"].split(":")[1]
    with tarfile.open(archive) as outer:
        layer = outer.extractfile(f"blobs/sha256/{digest}")
        assert layer is not None
        with tarfile.open(fileobj=layer, mode="r|") as tar:
            members = {m.name: m for m in tar}
    assert members["bin/busybox"].mode == 0o755 and members["bin/busybox"].isfile()
    for applet in ("sh", "true", "echo", "cat", "ls", "sleep", "wget", "httpd", "nc", "ping"):
        assert members[f"bin/{applet}"].issym() and members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["home/user"].uid == 1000
    assert "etc/passwd" in members and "etc/group" in members
    names = list(members)
    assert names.index("bin") < names.index("bin/busybox")  # parents first


def test_busybox_cache_hit_returns_same_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = image_archive("busybox", cache)
    mtime = first.stat().st_mtime_ns
    from volmerge.demoimages import cache as image_cache

    image_cache.MEMO.clear()  # force the on-disk lookup, not the in-process memo
    second = image_archive("busybox", cache)
    assert second == first and second.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in cache.glob("*.tar")) == [first.name]


def test_busybox_build_is_deterministic(tmp_path: Path) -> None:
    a = image_archive("busybox", tmp_path / "a")
    b = image_archive("busybox", tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


def test_busybox_runs_in_podman(tmp_path: Path, podman) -> None:
    archive = image_archive("busybox", tmp_path / "cache")
    out = podman("load", "-i", str(archive)).stdout
    assert REFS["busybox"] in out
    podman.run(REFS["busybox"], "/bin/busybox", "true")
    proc = podman.run(REFS["busybox"], "sh", "-c", "stat -c %a /tmp; id -u user; echo ok")
    assert proc.stdout.split() == ["1777", "1000", "ok"]


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VOLMERGE_FIXTURE_CACHE", str(tmp_path / "envcache"))
    p = image_archive("busybox")
    assert p.parent == (tmp_path / "envcache").resolve()
    assert os.path.getsize(p) > 1_000_000
