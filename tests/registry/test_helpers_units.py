"""Pure parts of credential helpers, mount sources and kept downloads (no root,
no registry)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from volmerge.runtime.errors import BadInput
from volmerge.runtime.registry import auth, mount, partial, reference

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def test_helper_name_rules(tmp_path: Path) -> None:
    f = tmp_path / "auth.json"
    assert auth._helper_name({}, "r:5000", f) is None
    assert auth._helper_name({"credsStore": "pass"}, "r:5000", f) == "pass"
    doc = {"credsStore": "pass", "credHelpers": {"r:5000": "ecr-login"}}
    assert auth._helper_name(doc, "r:5000", f) == "ecr-login"          # the registry's own first
    assert auth._helper_name(doc, "other:1", f) == "pass"
    hub = {"credHelpers": {"https://index.docker.io/v1/": "desktop"}}
    assert auth._helper_name(hub, reference.DOCKER_HUB, f) == "desktop"
    for bad in ("../../bin/sh", "a/b", "", " x", 7):
        if bad == "":
            assert auth._helper_name({"credsStore": bad}, "r:5000", f) is None
            continue
        with pytest.raises(BadInput, match="bad credential helper name"):
            auth._helper_name({"credsStore": bad}, "r:5000", f)
    with pytest.raises(BadInput, match="credHelpers"):
        auth._helper_name({"credHelpers": ["x"]}, "r:5000", f)


def test_helper_server_url() -> None:
    assert auth._server_url("r.example:5000") == "r.example:5000"
    assert auth._server_url(reference.DOCKER_HUB) == "https://index.docker.io/v1/"


def _store(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=lambda *p: tmp_path.joinpath(*p))


def test_mount_cache_remembers_the_newest_repositories(tmp_path: Path) -> None:
    images = SimpleNamespace(store=_store(tmp_path), list=lambda: [])
    for n in range(6):
        mount.remember(images, reference.parse(f"r.example:5000/team/app{n}:1"), [D1])
    mount.remember(images, reference.parse("other.example/x:1"), [D2])
    dest = reference.parse("r.example:5000/team/app9:1")
    got = mount.sources(images, dest, [D1, D2])
    assert got[D1] == ["team/app5", "team/app4", "team/app3", "team/app2"]   # 4, newest first
    assert got[D2] == []                                                     # another registry
    assert mount.sources(images, reference.parse("r.example:5000/team/app5:1"), [D1])[D1][0] \
        == "team/app4"                                                       # never itself
    (tmp_path / "registry" / "blob-repos.json").write_text("{not json")
    assert mount.sources(images, dest, [D1]) == {D1: []}                    # a cache: lost is fine


def test_mount_sources_from_pulled_images(tmp_path: Path) -> None:
    img = SimpleNamespace(digest=D2, layers=[SimpleNamespace(digest=D1)],
                          repo_digests=[f"r.example:5000/base/os@{D2}", f"elsewhere/x@{D2}"])
    images = SimpleNamespace(store=_store(tmp_path), list=lambda: [img])
    got = mount.sources(images, reference.parse("r.example:5000/team/app:1"), [D1, D2])
    assert got == {D1: ["base/os"], D2: ["base/os"]}


def test_partial_keep_take_and_sweep(tmp_path: Path) -> None:
    store = _store(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    part = staging / (D1[7:] + ".part")
    part.write_bytes(b"x" * 100)
    empty = staging / (D2[7:] + ".part")
    empty.write_bytes(b"")
    partial.keep(store, [(D1, part), (D2, empty), (D2, staging / "missing")])
    kept = tmp_path / "registry" / "partial"
    assert sorted(os.listdir(kept)) == [D1[7:] + ".part"]                  # nothing empty kept
    assert partial.take(store, D1, part) == 100 and not os.listdir(kept)
    assert partial.take(store, D1, part) == 0                               # taken once
    assert partial.take(store, "sha256:../../etc", part) == 0
    partial.keep(store, [(D1, part)])
    old = time.time() - partial.MAX_AGE - 10
    os.utime(kept / (D1[7:] + ".part"), (old, old))
    partial.sweep(store)
    assert not os.listdir(kept)
    os.symlink("/etc/passwd", kept / (D2[7:] + ".part"))
    assert partial.take(store, D2, staging / "p") == 0 and not (staging / "p").exists()
