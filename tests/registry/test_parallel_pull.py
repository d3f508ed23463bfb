"""Several ``volmerge pull`` of one image into one store at once (a real
registry on loopback): the ``layer-HEX`` locks order the extractions, the
``images`` lock the commit, a kept partial download goes to one pull only.
Each pull succeeds; the store holds the image once, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pushed(open_registry, tmp_path_factory) -> str:
    """Three layers of 1 MB each that do not compress, pushed from a store of its own."""
    from volmerge.demoimages.recipes import busybox_entries
    from volmerge.fixtures import build_image
    from volmerge.runtime import sys as rsys

    out = tmp_path_factory.mktemp("par")
    layers = [busybox_entries()] + [{f"l{i}": os.urandom(1_000_000)} for i in range(3)]
    tar = build_image(out / "par.tar", layers, {"Env": ["PATH=/bin"], "Cmd": ["/bin/true"]},
                      "localhost/par:1", compress="gzip")
    ref = open_registry.ref("parallel/img:1")
    env = dict(os.environ, VOLMERGE_ROOT=str(out / "root"),
               VOLMERGE_CERTS_D=str(open_registry.certs_d))
    try:
        for args in (("image", "load", str(tar)), ("push", "-q", "localhost/par:1", ref)):
            subprocess.run([sys.executable, "-m", "volmerge", *args], env=env, check=True,
                           capture_output=True)
    finally:
        rsys.umount_tree(out / "root")
    return ref


def test_three_pulls_of_one_image_at_once(cli, open_registry, pushed: str, root: Path,
                                          tmp_path: Path) -> None:
    env = dict(os.environ, VOLMERGE_ROOT=str(root), VOLMERGE_CERTS_D=str(open_registry.certs_d),
               REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"))
    procs = [subprocess.Popen([sys.executable, "-m", "volmerge", "pull", "-q", pushed], env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    results = []
    for p in procs:
        so, se = p.communicate(timeout=240)
        results.append((p.returncode, so, se))
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert len({out.strip() for _, out, _ in results}) == 1  # one image id
    [img] = json.loads(cli("image", "ls", "--json").stdout)
    assert img["RepoTags"] == [pushed]
    data = json.loads(cli("image", "inspect", pushed, "--json").stdout)
    assert len(data["Layers"]) == 4
    assert sorted(os.listdir(root / "layers")) == sorted(
        x["DiffID"].removeprefix("sha256:") for x in data["Layers"])
    assert os.listdir(root / "tmp") == []
    p = cli("run", "--rm", "--network", "none", pushed, "sh", "-c", "wc -c < /l2")
    assert p.returncode == 0 and p.stdout.strip() == "1000000", p.stderr
