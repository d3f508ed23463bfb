"""Several volmerge processes loading, tagging and removing images on one
root at once never corrupt it (issue 2, item 3)."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

from .builders import E, image_files, layer_tar, sha, write_tar

BASE = layer_tar([E("bin", "dir"), E("bin/base", data=os.urandom(200_000))])


def _image(tmp_path: Path, name: str) -> Path:
    top = layer_tar([E("etc", "dir"), E("etc/who", data=name.encode())])
    return write_tar(image_files([BASE, top], ref=f"localhost/{name}:1", config={"Labels": {"who": name}}),
                     tmp_path / f"{name}.tar")


def test_parallel_processes_keep_the_store_consistent(root: Path, tmp_path: Path, cli) -> None:
    imgs = {n: _image(tmp_path, n) for n in ("a", "b", "c", "gone2", "gone3", "common")}
    vm = f"{shlex.quote(sys.executable)} -m volmerge"
    scripts = []
    for i in range(4):
        own = "abc"[i % 3]
        steps = [
            f"{vm} image load {imgs[own]}",
            f"{vm} image tag {own}:1 w{i}:1",
            f"{vm} image load {imgs['common']} --tag c{i}:1",
            f"{vm} image rm w{i}:1",
        ]
        if i >= 2:  # remove an image whose base layer the others are loading
            g = f"gone{i}"
            steps += [f"{vm} image load {imgs[g]}", f"{vm} image rm {g}:1",
                      f"{vm} image load {imgs[g]}", f"{vm} image rm {g}:1"]
        scripts.append(" && ".join(steps))
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    procs = [subprocess.Popen(["sh", "-c", s], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in scripts]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err

    db = sqlite3.connect(root / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        tags = dict(db.execute("SELECT name, image_id FROM tags"))
        layer_rows = {r[0][7:] for r in db.execute("SELECT diff_id FROM layers")}
        used = {r[0][7:] for r in db.execute("SELECT diff_id FROM image_layers")}
        blobs = {r[0][7:] for r in db.execute("SELECT manifest_digest FROM images")}
        blobs |= {r[0] for r in db.execute("SELECT id FROM images")}
        blobs |= {r[0][7:] for r in db.execute("SELECT digest FROM image_layers")}
    finally:
        db.close()
    expected = {"localhost/a:1", "localhost/b:1", "localhost/c:1", "localhost/common:1"} | {f"c{i}:1" for i in range(4)}
    assert set(tags) == expected
    assert len({tags[f"c{i}:1"] for i in range(4)} | {tags["localhost/common:1"]}) == 1
    assert layer_rows == used == set(os.listdir(root / "layers"))
    assert sha(BASE)[7:] in layer_rows and len(layer_rows) == 5  # base + a, b, c, common tops
    assert set(os.listdir(root / "blobs" / "sha256")) == blobs
    assert os.listdir(root / "tmp") == []

    listing = json.loads(cli("image", "ls", "--json").stdout)
    assert sorted(t for i in listing for t in i["RepoTags"]) == sorted(expected)
    for name in ("a", "b", "c", "common"):
        data = json.loads(cli("image", "inspect", f"{name}:1", "--json").stdout)
        top = Path(data["Layers"][1]["Path"])
        assert (top / "etc" / "who").read_text() == name
        assert (Path(data["Layers"][0]["Path"]) / "bin" / "base").stat().st_size == 200_000
