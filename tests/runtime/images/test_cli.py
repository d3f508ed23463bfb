"""`volmerge image ...` end to end: formats, listing, tags, removal, save."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from volmerge.runtime.errors import Conflict
from volmerge.runtime.images import _USER_CHECKS, ImageStore, register_user_check

from .builders import (
    E,
    config_digest,
    docker_files,
    image_files,
    layer_tar,
    sha,
    write_dir,
    write_tar,
)

BASE = layer_tar([E("bin", "dir"), E("bin/tool", data=b"tool", mode=0o755), E("etc", "dir"),
                  E("etc/conf", data=b"a=1\n")])
TOP = layer_tar([E("etc", "dir"), E("etc/conf", data=b"a=2\n"), E("etc/.wh.old")])


def _ls(cli) -> list[dict]:
    r = cli("image", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("form", ["layout", "oci-archive", "docker-archive"])
def test_load_each_format(cli, tmp_path: Path, form: str) -> None:
    if form == "docker-archive":
        files = docker_files([BASE, TOP], tag="localhost/app:2")
        src = write_tar(files, tmp_path / "d.tar")
        name = "localhost/app:2"
    else:
        files = image_files([BASE, TOP], compression="gzip", ref="localhost/app:2")
        src = write_dir(files, tmp_path / "lay") if form == "layout" else write_tar(files, tmp_path / "o.tar")
        name = "localhost/app:2"
    r = cli("image", "load", str(src))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Loaded image: {name}"
    [img] = _ls(cli)
    assert img["RepoTags"] == [name] and img["Layers"] == 2
    r = cli("image", "inspect", "app:2", "--json")
    data = json.loads(r.stdout)
    assert data["Config"]["Cmd"] == ["/bin/sh"]
    assert [x["DiffID"] for x in data["Layers"]] == [sha(BASE), sha(TOP)]
    top = Path(data["Layers"][1]["Path"])
    assert (top / "etc" / "conf").read_text() == "a=2\n"


def test_ls_inspect_tag_rm_and_refcounted_layers(cli, root: Path, tmp_path: Path) -> None:
    one = image_files([BASE], ref="localhost/one:1", config={"Labels": {"n": "1"}})
    two = image_files([BASE, TOP], ref="localhost/two:1", config={"Labels": {"n": "2"}})
    assert cli("image", "load", str(write_tar(one, tmp_path / "1.tar"))).returncode == 0
    r = cli("image", "load", str(write_tar(two, tmp_path / "2.tar")), "--tag", "example.com:5000/x/two:v2")
    assert r.returncode == 0 and r.stdout.strip() == "Loaded image: example.com:5000/x/two:v2", r.stderr
    assert len(os.listdir(root / "layers")) == 2  # BASE is shared, extracted once
    r = cli("image", "ls")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert len(lines) == 4
    short = config_digest(two)[7:19]
    assert short in r.stdout
    assert cli("image", "ls", "-q").stdout.split() == [short, config_digest(one)[7:19]]
    human = cli("image", "inspect", short).stdout
    assert "Layers:       2" in human and "n=2" in human
    assert cli("image", "tag", "one:1", "one:again").returncode == 0
    assert json.loads(cli("image", "inspect", "one:again", "--json").stdout)["RepoTags"] == [
        "localhost/one:1", "one:again"]
    # rm by id with several tags refuses without --force
    r = cli("image", "rm", config_digest(one)[7:])
    assert r.returncode == 2 and "--force" in r.stderr
    assert cli("image", "rm", "one:again").stdout.strip() == "Untagged: one:again"
    r = cli("image", "rm", "two:1", "example.com:5000/x/two:v2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"Deleted: {config_digest(two)}"
    assert len(os.listdir(root / "layers")) == 1  # TOP went, BASE still used by one
    assert cli("image", "rm", "-f", "one:1").returncode == 0
    assert os.listdir(root / "layers") == [] and os.listdir(root / "blobs" / "sha256") == []


def test_get_by_ids_and_bad_refs(images: ImageStore, tmp_path: Path) -> None:
    img = images.load(write_dir(image_files([BASE]), tmp_path / "l"))
    assert images.get(img.id).id == img.id
    assert images.get("sha256:" + img.id[:8]).id == img.id
    assert images.get(img.id[:4]).id == img.id
    assert images.get("test:1").id == img.id  # localhost/ is implied
    from volmerge.runtime.errors import BadInput, NotFound

    with pytest.raises(NotFound):
        images.get("nope")
    with pytest.raises(BadInput):
        images.tag("test:1", "Bad Name")


def test_user_check_blocks_removal(images: ImageStore, tmp_path: Path) -> None:
    img = images.load(write_dir(image_files([BASE]), tmp_path / "l"))

    def users(store, image_id):  # type: ignore[no-untyped-def]
        return ["web"] if image_id == img.id else []

    register_user_check(users)
    try:
        with pytest.raises(Conflict, match="used by container"):
            images.remove("test:1", force=True)
        assert images.get("test:1").id == img.id
    finally:
        _USER_CHECKS.remove(users)
    assert images.remove("test:1") == ["Untagged: localhost/test:1", f"Deleted: sha256:{img.id}"]


def test_save_roundtrip_keeps_digests(cli, root: Path, tmp_path: Path) -> None:
    files = image_files([BASE, TOP], compression="zstd", ref="localhost/z:1")
    assert cli("image", "load", str(write_tar(files, tmp_path / "z.tar"))).returncode == 0
    out = tmp_path / "saved.tar"
    r = cli("image", "save", "z:1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert cli("image", "rm", "z:1").returncode == 0
    assert cli("image", "load", str(out)).stdout.strip() == "Loaded image: localhost/z:1"
    data = json.loads(cli("image", "inspect", "z:1", "--json").stdout)
    index = json.loads(files["index.json"])
    assert data["ManifestDigest"] == index["manifests"][0]["digest"]
    assert data["Layers"][0]["MediaType"].endswith("+zstd")
    r = cli("image", "save", "z:1", "-o", str(tmp_path / "no" / "such" / "x.tar"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_save_to_stdout(cli, root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``-o -`` is standard output, as ``volume export -o -`` (it wrote a file
    named ``-`` in the current directory): the same bytes as ``-o FILE``."""
    import subprocess
    import sys

    files = image_files([BASE], ref="localhost/z:1")
    assert cli("image", "load", str(write_tar(files, tmp_path / "z.tar"))).returncode == 0
    assert cli("image", "save", "z:1", "-o", str(tmp_path / "file.tar")).returncode == 0
    work = tmp_path / "cwd"
    work.mkdir()
    p = subprocess.run([sys.executable, "-m", "volmerge", "image", "save", "z:1", "-o", "-"],
                       capture_output=True, cwd=work, timeout=120,
                       env=dict(os.environ, VOLMERGE_ROOT=str(root)))
    assert p.returncode == 0, p.stderr
    assert p.stdout == (tmp_path / "file.tar").read_bytes()
    assert os.listdir(work) == []


def test_state_database_pragmas_and_schema(images: ImageStore, root: Path) -> None:
    db = images.store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    raw = sqlite3.connect(root / "state.db")
    try:
        assert raw.execute("SELECT version FROM schema_version WHERE component='images'").fetchone()[0] == 2  # v2: repo_digests
    finally:
        raw.close()


def test_sweep_removes_crash_leftovers(images: ImageStore, root: Path, tmp_path: Path) -> None:
    img = images.load(write_dir(image_files([BASE]), tmp_path / "l"))
    # a layer dir renamed into place but never recorded, and an unreferenced blob
    stray = root / "layers" / ("ab" * 32)
    (stray / "diff").mkdir(parents=True)
    (root / "blobs" / "sha256" / ("cd" * 32)).write_bytes(b"x")
    (root / "tmp" / "layer-dead").mkdir()
    from volmerge.runtime.store import Store

    Store(root).close()  # opening sweeps
    assert not stray.exists() and not (root / "blobs" / "sha256" / ("cd" * 32)).exists()
    assert os.listdir(root / "tmp") == []
    assert Path(img.lower_dirs()[0]).is_dir()


def test_help_texts(cli) -> None:
    for sub in ("load", "ls", "inspect", "tag", "rm", "save"):
        r = cli("image", sub, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout
