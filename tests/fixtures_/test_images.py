"""Every fixture kind builds, skopeo reads it, and it works in podman.

Kinds are built into the suite's shared cache (``fixture_image``), so these
tests also warm it for everyone else.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from volmerge.demoimages import cache as image_cache
from volmerge.demoimages import recipes
from volmerge.fixtures import REFS, Dir, File, Hardlink, Symlink, build_image, image_archive, images
from volmerge.fixtures.images import FixtureError

from .conftest import skopeo_config, skopeo_inspect

HAVE_PGSERVER = importlib.util.find_spec("pgserver") is not None
LAYERS = {"busybox": 1, "python": 2, "postgres15": 2, "postgres16": 2,
          "demo-v1": 3, "demo-v2": 3, "demo-v3": 3}


def kinds():
    for k in LAYERS:
        marks = [pytest.mark.skipif(not HAVE_PGSERVER, reason="pgserver (extra pg16) not installed")] \
            if k == "postgres16" else []
        yield pytest.param(k, marks=marks, id=k)


def index_of(archive: Path) -> dict:
    with tarfile.open(archive) as t:
        f = t.extractfile("index.json")
        assert f is not None
        return json.load(f)


def raw_config(archive: Path) -> dict:
    with tarfile.open(archive) as t:
        def blob(digest: str) -> dict:
            f = t.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert f is not None
            return json.load(f)

        manifest = blob(index_of(archive)["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"])


@pytest.mark.parametrize("kind", list(kinds()))
def test_kind_builds_and_skopeo_reads_it(kind: str, fixture_image) -> None:
    archive = fixture_image(kind)
    info = skopeo_inspect(archive)
    assert len(info["Layers"]) == LAYERS[kind]
    ann = index_of(archive)["manifests"][0]["annotations"]
    assert ann["org.opencontainers.image.ref.name"] == REFS[kind]
    mtime = archive.stat().st_mtime_ns
    image_cache.MEMO.clear()  # the on-disk cache, not the in-process memo
    assert fixture_image(kind) == archive and archive.stat().st_mtime_ns == mtime  # no rebuild


def test_postgres_config(fixture_image) -> None:
    cfg = skopeo_config(fixture_image("postgres15"))["config"]
    assert "PGDATA=/var/lib/postgresql/data" in cfg["Env"]
    assert cfg["Volumes"] == {"/var/lib/postgresql/data": {}}
    assert any(e.startswith("PATH=/usr/lib/postgresql/15/bin:") for e in cfg["Env"])


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(FixtureError, match="unknown fixture kind"):
        image_archive("nginx")


def test_postgres16_without_pgserver_is_a_clear_error(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pgserver" else real(name, *a))
    with pytest.raises(FixtureError, match="pgserver"):
        images.recipe("postgres16")


def test_source_change_rebuilds_and_drops_the_stale_archive(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = image_archive("busybox", cache)
    monkeypatch.setattr(image_cache, "_SOURCE_HASH", "pretend the builder changed")
    image_cache.MEMO.clear()
    second = image_archive("busybox", cache)
    assert second != first and second.exists() and not first.exists()
    assert len(list((cache / "layers").glob("busybox-*.tar"))) == 1


def test_parallel_builders_make_one_archive(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = f"from volmerge.fixtures import image_archive; print(image_archive('busybox', {str(cache)!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1 and Path(outs.pop()).exists()
    assert [p.name for p in cache.iterdir() if p.suffix == ".tar"].__len__() == 1
    assert not list(cache.rglob("*.part"))


# --- the generic builder --------------------------------------------------------


@pytest.mark.parametrize("compress", ["none", "gzip"])
def test_build_image_from_dicts_and_directories(tmp_path: Path, compress: str, podman) -> None:
    tree = tmp_path / "tree"
    (tmp_path / "tree" / "srv").mkdir(parents=True)
    (tree / "srv" / "hello.txt").write_text("hello from a directory\n")
    (tree / "srv" / "link").symlink_to("hello.txt")
    out = build_image(
        tmp_path / "img.tar",
        [
            tmp_path / "tree",
            {"etc/app.conf": "a = 1\n", "opt/x": File(b"\x00\x01", mode=0o600, uid=1000),
             "opt/y": Hardlink("opt/x"), "opt/d": Dir(0o700), "opt/l": Symlink("/etc/app.conf"),
             "srv/.wh.link": b""},
        ],
        {"Cmd": ["/bin/sh"], "Labels": {"k": "v"}},
        "localhost/test/generic:1",
        compress=compress,
    )
    info = skopeo_inspect(out)
    cfg = skopeo_config(out)
    assert info["Labels"] == {"k": "v"} and len(info["Layers"]) == 2
    if compress == "gzip":
        assert info["Layers"][0] != cfg["rootfs"]["diff_ids"][0]
    else:
        assert info["Layers"] == cfg["rootfs"]["diff_ids"]
    out2 = build_image(tmp_path / "img2.tar", [tmp_path / "tree", {"etc/app.conf": "a = 1\n"}],
                       {}, "localhost/test/generic:2", compress=compress)
    assert skopeo_inspect(out2)["Layers"][0] == info["Layers"][0]  # deterministic layers
    assert "localhost/test/generic:1" in podman("load", "-i", str(out)).stdout


def test_build_image_on_busybox_runs_in_podman(tmp_path: Path, podman) -> None:
    """A ready layer tar as input: the busybox layer from the cache plus a dict."""
    bb = image_cache.cached_layer(recipes.busybox_layer(), image_cache.cache_root().resolve(), "none")
    out = build_image(tmp_path / "app.tar",
                      [bb.path, {"usr/local/bin/hello": File("#!/bin/sh\necho hi $1\n", mode=0o755)}],
                      {"Env": ["PATH=/usr/local/bin:/bin"], "Cmd": ["hello", "there"]},
                      "localhost/test/hello:1")
    assert skopeo_inspect(out)["Layers"][0] == bb.digest
    podman("load", "-i", str(out))
    assert podman.run("localhost/test/hello:1").stdout == "hi there\n"


def test_bad_layer_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.\.'"):
        build_image(tmp_path / "x.tar", [{"../etc/passwd": "x"}], {}, "localhost/x:1")
    with pytest.raises(TypeError, match="unsupported"):
        build_image(tmp_path / "y.tar", [{"a": 42}], {}, "localhost/y:1")  # type: ignore[dict-item]
    assert not list(tmp_path.iterdir())


# --- running the images --------------------------------------------------------------


def test_python_image_runs_stdlib_in_podman(fixture_image, podman) -> None:
    podman("load", "-i", str(fixture_image("python")))
    proc = podman.run(REFS["python"], "python3", "-c",
                      "import sqlite3, json, http.server, ssl, ctypes, lzma, zlib, decimal;"
                      "c = sqlite3.connect(':memory:'); print(c.execute('select 41+1').fetchone()[0])")
    assert proc.stdout.strip() == "42"


def test_demo_image_serves_in_podman(fixture_image, podman) -> None:
    podman("load", "-i", str(fixture_image("demo-v2")))
    podman.run("-d", "--name", "notes", REFS["demo-v2"], rm=False)
    try:
        # The image's own health check command, run inside the container.
        cfg = raw_config(fixture_image("demo-v2"))["config"]  # skopeo drops Healthcheck
        cmd = cfg["Healthcheck"]["Test"][1]
        for _ in range(50):
            proc = podman("exec", "notes", "sh", "-c", cmd, check=False)
            if proc.returncode == 0:
                break
            time.sleep(0.1)
        assert json.loads(proc.stdout)["version"] == 2
        assert podman("exec", "notes", "cat", "/etc/volmerge/policy.toml").stdout == cfg["Labels"]["io.volmerge.policy"]
    finally:
        podman("rm", "-f", "-t", "2", "notes", check=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in kinds() if "postgres" in k.values[0]])
def test_postgres_image_initdb_and_serve_in_podman(kind: str, fixture_image, podman) -> None:
    podman("load", "-i", str(fixture_image(kind)))
    podman.run("-d", "--name", "pg", REFS[kind], rm=False)
    try:
        for _ in range(100):
            if podman("exec", "pg", "pg_isready", "-h", "127.0.0.1", "-U", "postgres", check=False).returncode == 0:
                break
            time.sleep(0.1)
        out = podman("exec", "pg", "psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
                     "create table t(x int); insert into t values (7); select version(), sum(x) from t").stdout
        assert f"PostgreSQL {kind[-2:]}." in out and out.strip().endswith("|7")
        for tool in ("pg_dump", "pg_dumpall", "pg_upgrade", "pg_ctl"):
            podman("exec", "pg", tool, "--version")
    finally:
        podman("rm", "-f", "-t", "5", "pg", check=False)
