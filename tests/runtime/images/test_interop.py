"""Interop with real clients: podman save (docker-archive, oci-archive),
skopeo copy (OCI layout) load bit-identically; volmerge save loads and runs
in podman; OCI whiteouts survive podman and become overlay whiteouts."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys
from volmerge.runtime.images import ImageStore

from .builders import E, busybox_rootfs, image_files, layer_tar, snapshot, write_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _tar_dir(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for entry in sorted(os.listdir(src)):
            tf.add(src / entry, arcname=entry)
    return out


@pytest.fixture
def podman_image(podman, tmp_path: Path) -> tuple[str, Path]:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    podman("import", str(_tar_dir(rootfs, tmp_path / "rootfs.tar")), "localhost/src:1")
    return "localhost/src:1", rootfs


def _same_tree(layer: Path, rootfs: Path) -> None:
    got, want = snapshot(layer), snapshot(rootfs)
    assert sorted(got) == sorted(want)
    diffs = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diffs, diffs
    assert os.lstat(layer / "etc" / "motd").st_ino == os.lstat(layer / "etc" / "motd.hard").st_ino


@pytest.mark.parametrize("form", ["docker-archive", "oci-archive", "skopeo-oci-layout"])
def test_podman_and_skopeo_images_load_bit_identical(
        podman, podman_image, images: ImageStore, tmp_path: Path, form: str) -> None:
    name, rootfs = podman_image
    if form == "skopeo-oci-layout":
        darch = tmp_path / "d.tar"
        podman("save", "--format", "docker-archive", "-o", str(darch), name)
        src = tmp_path / "layout"
        podman("copy", f"docker-archive:{darch}", f"oci:{src}:src", tool="skopeo")
        assert (src / "index.json").is_file()
    else:
        src = tmp_path / f"{form}.tar"
        podman("save", "--format", form, "-o", str(src), name)
    img = images.load(src)
    assert len(img.layers) == 1
    if form == "docker-archive":
        assert img.tags == [name]
    podman_id = podman("images", "--no-trunc", "--format", "{{.ID}}", name).stdout.strip()
    assert podman_id.removeprefix("sha256:") == img.id
    _same_tree(img.layers[0].path, rootfs)


def test_volmerge_save_loads_and_runs_in_podman(podman, cli, tmp_path: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    layer = (_tar_dir(rootfs, tmp_path / "layer.tar")).read_bytes()
    files = image_files([layer], compression="gzip", ref="localhost/vm:1")
    assert cli("image", "load", str(write_tar(files, tmp_path / "in.tar"))).returncode == 0
    out = tmp_path / "saved.tar"
    r = cli("image", "save", "vm:1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "localhost/vm:1" in podman("load", "-i", str(out)).stdout
    podman.run("localhost/vm:1", "/bin/busybox", "true")
    assert podman.run("localhost/vm:1", "/bin/cat", "/etc/motd").stdout == "hello\n"
    # and skopeo reads it by name
    info = json.loads(podman("inspect", f"oci-archive:{out}", tool="skopeo").stdout)
    assert len(info["Layers"]) == 1


def test_whiteouts_through_podman_become_overlay_whiteouts(
        podman, images: ImageStore, tmp_path: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "var").mkdir()
    (rootfs / "var" / "old1").write_text("1")
    (rootfs / "var" / "old2").write_text("2")
    base = _tar_dir(rootfs, tmp_path / "base.tar").read_bytes()
    top = layer_tar([E("etc", "dir"), E("etc/.wh.motd"), E("var", "dir"), E("var/.wh..wh..opq"),
                     E("var/new", data=b"n")])
    podman("load", "-i", str(write_tar(image_files([base, top], ref="localhost/wh:1"), tmp_path / "wh.tar")))
    assert podman.run("localhost/wh:1", "/bin/ls", "/var").stdout.split() == ["new"]
    out = tmp_path / "podman-wh.tar"
    podman("save", "--format", "oci-archive", "-o", str(out), "localhost/wh:1")
    img = images.load(out)
    upper = img.layers[1].path
    st = os.lstat(upper / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "var", "trusted.overlay.opaque") == b"y"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rsys.mount_overlay(mnt, img.lower_dirs(), readonly=True)
    try:
        assert os.listdir(mnt / "var") == ["new"]
        assert not (mnt / "etc" / "motd").exists() and (mnt / "etc" / "motd.hard").exists()
    finally:
        rsys.umount(mnt)
