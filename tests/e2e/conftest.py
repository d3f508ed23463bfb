"""End-to-end fixtures: a store with the demo images loaded, the CLI inside
the test's own network namespace, and small busybox images for crash tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = {1: "localhost/volmerge-demo/notes:1", 2: "localhost/volmerge-demo/notes:2",
        3: "localhost/volmerge-demo/notes:3"}
APP = {1: "localhost/volmerge-test/app:1", 2: "localhost/volmerge-test/app:2",
       3: "localhost/volmerge-test/app:3"}


def _app_image(out: Path, version: int) -> Path:
    from volmerge.demoimages.recipes import busybox_entries as _busybox_entries
    from volmerge.fixtures import Dir, build_image

    script = "trap 'exit 0' TERM; while :; do sleep 0.05; done"
    config: dict = {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", script]}
    if version == 3:  # no longer declares (or has anything at) /data
        return build_image(out, [_busybox_entries(), {"etc/app-v3": "3\n"}], config, APP[version])
    settings = {1: '{\n  "a": 1,\n  "b": 2\n}\n', 2: '{\n  "a": 1,\n  "b": 3,\n  "c": 4\n}\n'}[version]
    data = {
        "data": Dir(0o755),
        "data/settings.json": settings,
        "data/static.txt": f"static v{version}\n",
    }
    if version == 2:
        data["data/added.txt"] = "new in v2\n"
    return build_image(out, [_busybox_entries(), data], {**config, "Volumes": {"/data": {}}},
                       APP[version])


@pytest.fixture(scope="module")
def loaded_root(tmp_path_factory, fixture_image) -> Path:
    """A store root (shared by one test module) with the demo and test app images."""
    root = tmp_path_factory.mktemp("e2e") / "root"
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    paths = [fixture_image(k) for k in ("demo-v1", "demo-v2", "demo-v3")]
    out = tmp_path_factory.mktemp("imgs")
    paths += [_app_image(out / f"app{v}.tar", v) for v in (1, 2, 3)]
    for p in paths:
        subprocess.run([sys.executable, "-m", "volmerge", "image", "load", str(p)], env=env,
                       check=True, capture_output=True)
    yield root
    from volmerge.runtime import sys as rsys

    rsys.umount_tree(root)


@contextlib.contextmanager
def cli_session(root: Path):  # type: ignore[no-untyped-def]
    """``run("upgrade", ...)`` runs the CLI against the store at ``root``;
    every container, volume and network left is removed afterwards."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
            check: bool = False) -> subprocess.CompletedProcess:
        full = dict(os.environ, VOLMERGE_ROOT=str(root), **(env or {}))
        p = subprocess.run([sys.executable, "-m", "volmerge", *args], capture_output=True,
                           text=True, env=full, timeout=timeout)
        if check:
            assert p.returncode == 0, f"volmerge {' '.join(args)}: {p.stderr}"
        return p

    run.root = root  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        ids = run("ps", "-aq").stdout.split()
        if ids:
            run("rm", "-f", *ids)
        vols = run("volume", "ls", "-q").stdout.split()
        if vols:
            run("volume", "rm", "-f", *vols)
        nets = run("network", "ls", "-q").stdout.split()
        if nets:
            run("network", "rm", *nets)


@pytest.fixture
def vm(loaded_root: Path, own_netns):  # type: ignore[no-untyped-def]
    """The CLI against the loaded store, in the test's network namespace."""
    with cli_session(loaded_root) as run:
        yield run


def tree_digest(path: Path) -> dict[str, str]:
    """Content of a tree: relative path -> sha256 (files) / -> target (symlinks)."""
    out = {}
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for n in sorted(files):
            p = Path(dirpath) / n
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def volume_digest(root: Path, name: str) -> dict[str, str]:
    from volmerge.runtime.store import Store
    from volmerge.volumes import VolumeManager

    st = Store(root)
    try:
        with VolumeManager(st).view(name) as v:
            return tree_digest(v)
    finally:
        st.close()
