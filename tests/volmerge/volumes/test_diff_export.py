"""diff (whiteouts, opaque dirs, symlinks never followed), export and import."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from volmerge.volumes import VolumeManager
from volmerge.volumes.diff import diff_stacks

from .helpers import digest, seed_dir, write


def _changes(vm: VolumeManager, name: str, **kw) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(c.path, c.kind) for c in vm.diff(name, **kw)}


def test_diff_reads_whiteouts_and_opaque_dirs(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    m = vm.attach("v", "c", seed)
    write(m, {"etc/app.conf": "port = 1\n", "etc/keep.conf": None, "data/old": None,
              "added/f": "new"})
    vm.detach("v", "c")
    assert _changes(vm, "v") == {
        ("etc/app.conf", "modified"), ("etc/keep.conf", "deleted"), ("data/old", "deleted"),
        ("data/old/a.txt", "deleted"), ("data/old/b.txt", "deleted"), ("added", "added"),
        ("added/f", "added"),
    }
    vm.snapshot("v", tag="one")
    m = vm.attach("v", "c", seed)
    write(m, {"data/old/z": "opaque dir now"})  # recreated over a whiteout: opaque
    vm.detach("v", "c")
    assert _changes(vm, "v") == {("data/old", "added"), ("data/old/z", "added")}
    assert _changes(vm, "v", from_="seed") == {
        ("etc/app.conf", "modified"), ("etc/keep.conf", "deleted"), ("data/old/a.txt", "deleted"),
        ("data/old/b.txt", "deleted"), ("data/old/z", "added"), ("added", "added"),
        ("added/f", "added"),
    }
    assert _changes(vm, "v", from_="seed", to="one") >= {("data/old", "deleted")}


def test_diff_never_follows_a_symlink_out_of_the_volume(tmp_path: Path) -> None:
    lower, upper = tmp_path / "l0", tmp_path / "l1"
    write(lower, {"keep": "k"})
    os.symlink("/etc", lower / "d")  # lower: d -> /etc (outside)
    write(upper, {"d/passwd": "mine"})  # upper: a real dir d over it
    os.symlink("../../../../../../etc/passwd", upper / "escape")
    changes = {(c.path, c.kind, c.type) for c in diff_stacks([lower], [lower, upper])}
    assert changes == {("d", "modified", "dir"), ("d/passwd", "added", "file"),
                       ("escape", "added", "symlink")}


def test_export_import_round_trip(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    m = vm.attach("v", "c", seed)
    write(m, {"data/big": os.urandom(100_000), "etc/keep.conf": None})
    os.symlink("/etc/shadow", m / "outside")
    os.setxattr(m / "data/big", "user.k", b"v")
    os.chown(m / "data/big", 1000, 1000)
    want = digest(m)
    vm.detach("v", "c")
    out = tmp_path / "v.tar"
    vm.export("v", out)
    with tarfile.open(out) as t:
        member = t.getmember("./outside")
        assert member.issym() and member.linkname == "/etc/shadow"  # stored, not followed
        assert "./etc/keep.conf" not in t.getnames()
    vm.import_("w", out)
    with vm.view("w") as v:
        assert digest(v) == want
        assert os.getxattr(v / "data/big", "user.k") == b"v"
    # an export at a snapshot
    vm.snapshot("w", tag="t")
    write(vm.live_upper("w"), {"later": "x"})
    vm.export("w", tmp_path / "t.tar", at="t")
    with tarfile.open(tmp_path / "t.tar") as t:
        assert "./later" not in t.getnames()


def test_cli_diff_json_and_export_to_stdout(cli, root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("volume", "create", "v").returncode == 0
    tar = tmp_path / "in.tar"
    src = tmp_path / "src"
    write(src, {"a": "1", "b/c": "2"})
    subprocess.run(["tar", "-C", src, "-cf", tar, "."], check=True)
    assert cli("volume", "import", "w", str(tar)).returncode == 0
    p = cli("volume", "diff", "w", "--from", "seed", "--json")
    assert p.returncode == 0, p.stderr
    assert {(c["path"], c["kind"]) for c in json.loads(p.stdout)} == {
        ("a", "added"), ("b", "added"), ("b/c", "added")}
    p = cli("volume", "diff", "w", "--from", "seed")
    assert "A a" in p.stdout.splitlines()
    r = subprocess.run([sys.executable, "-m", "volmerge", "volume", "export", "w", "-o", "-"],
                       capture_output=True, env=dict(os.environ, VOLMERGE_ROOT=str(root)))
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        assert sorted(t.getnames()) == [".", "./a", "./b", "./b/c"]
