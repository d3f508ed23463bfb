"""Fixtures for the runtime tests: images, engines for both executors, and a
cgroup leak guard (the session guard checks mounts, processes, interfaces
and temp files; containers also leave cgroups if torn down badly)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cleanup import remove_containers_in
from volmerge.runtime import cgroups

BUSYBOX_REF = "localhost/volmerge-fixture/busybox:latest"
EXECUTORS = ["runc", "builtin"] if shutil.which("runc") else ["builtin"]


@pytest.fixture(autouse=True)
def cgroup_guard():
    before = set(cgroups.leftovers())
    yield
    leaked = sorted(set(cgroups.leftovers()) - before)
    if leaked:
        for d in leaked:
            try:
                os.rmdir(d)
            except OSError:
                pass
        pytest.fail(f"test leaked cgroups: {leaked}")


@pytest.fixture(autouse=True)
def remove_containers(tmp_path: Path):
    """After a (failing) test, remove what it left in its store, before the
    leak guards look."""
    yield
    remove_containers_in(tmp_path / "root")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain busybox root directory (usable as an image: an absolute path)."""
    base = tmp_path_factory.mktemp("images")
    root = base / "busybox"
    (root / "bin").mkdir(parents=True)
    for d in ("etc", "tmp", "data", "var", "root"):
        (root / d).mkdir()
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", root / "bin" / a)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    (root / "data" / "seed.txt").write_text("from the image\n")
    return root


@pytest.fixture(scope="session")
def make_image(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory):
    """``make_image(config, name)`` -> absolute path of a busybox rootfs image
    whose OCI image config is ``config`` (``{"config": {...}}``)."""
    base = tmp_path_factory.mktemp("cfgimages")
    made: dict[str, Path] = {}

    def make(config: dict, name: str, extra: dict[str, str] | None = None) -> str:
        if name in made:
            return str(made[name])
        d = base / name
        shutil.copytree(busybox_rootfs, d, symlinks=True)
        for rel, content in (extra or {}).items():
            if content.startswith("->"):
                os.symlink(content[2:], d / rel)
            else:
                (d / rel).parent.mkdir(parents=True, exist_ok=True)
                (d / rel).write_text(content)
        (base / f"{name}.json").write_text(json.dumps(config))
        made[name] = d
        return str(d)

    return make


@pytest.fixture
def image(store, fixture_image) -> str:
    """The fixture busybox image, loaded into this test's store."""
    from volmerge.runtime.images import ImageStore

    ImageStore(store).load(fixture_image("busybox"))
    return BUSYBOX_REF


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine(store, executor):
    from volmerge.runtime.containers import Engine

    eng = Engine(store, runtime=executor)
    yield eng
    # Whatever a failing test left running goes away with its store.
    for c in eng.list(all=True):
        try:
            eng.remove(c.id, force=True)
        except Exception:  # noqa: BLE001
            pass
