"""Fixtures for the compose tests that run real containers: the busybox
fixture image in the test's store, its own network namespace, and whatever a
failing test left removed before the leak guards look."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cleanup import remove_containers_in

BUSYBOX_REF = "localhost/volmerge-fixture/busybox:latest"


@pytest.fixture
def image(store, fixture_image) -> str:
    from volmerge.runtime.images import ImageStore

    ImageStore(store).load(fixture_image("busybox"))
    return BUSYBOX_REF


@pytest.fixture(autouse=True)
def remove_containers(tmp_path: Path):
    yield
    remove_containers_in(tmp_path / "root")


@pytest.fixture(scope="session")
def app_rootfs(tmp_path_factory: pytest.TempPathFactory):
    """``app_rootfs(version, ok=True)``: a busybox root with /data/seed.txt
    saying the version and, when ``ok``, the /ok its health check tests."""
    import os
    import shutil
    import subprocess

    base = tmp_path_factory.mktemp("apps")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()

    def make(version: str, ok: bool = True) -> Path:
        root = base / f"{version}-{ok}"
        if root.exists():
            return root
        for d in ("bin", "etc", "tmp", "data"):
            (root / d).mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin" / "busybox")
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", root / "bin" / a)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "data" / "seed.txt").write_text(f"{version}\n")
        if ok:
            (root / "ok").write_text("")
        return root

    return make


@pytest.fixture
def app_images(store, app_rootfs):
    """app:1, app:2, app:3 and app:bad (no /ok: its health check fails) in the store."""
    from volmerge.runtime.images import ImageStore

    images = ImageStore(store)
    cfg = {"Cmd": ["sleep", "1000"], "Volumes": {"/data": {}}}
    for tag, ok in (("1", True), ("2", True), ("3", True), ("bad", False)):
        images.import_dir(app_rootfs(tag, ok), tag=f"localhost/app:{tag}", config=cfg)
    return "localhost/app"
