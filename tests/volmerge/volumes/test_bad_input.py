"""Bad input through the real CLI: one line on stderr, exit 2, nothing changed."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from .helpers import write


def _fingerprint(root: Path) -> list[tuple[str, int]]:
    """Every path below the store and its size (except lock files and the
    state database, which other components' sweepers may open on start)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            if "/locks/" in p or os.path.basename(p).startswith("state.db"):
                continue
            out.append((os.path.relpath(p, root), 0 if os.path.isdir(p) else os.lstat(p).st_size))
    return sorted(out)


@pytest.fixture
def store_with_volume(vm, root: Path):  # type: ignore[no-untyped-def]
    vm.create("v")
    vm.snapshot("v", tag="t1")
    vm.create("other")
    return root


def _hostile_tar(tmp_path: Path) -> Path:
    """A tar that plants a symlink to a directory outside, then writes through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    t = tmp_path / "evil.tar"
    with tarfile.open(t, "w") as tf:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tf.addfile(link)
        data = tarfile.TarInfo("escape/pwned")
        data.size = 0
        tf.addfile(data)
    return t


def _dotdot_tar(tmp_path: Path) -> Path:
    t = tmp_path / "dotdot.tar"
    with tarfile.open(t, "w") as tf:
        data = tarfile.TarInfo("../../pwned")
        data.size = 0
        tf.addfile(data)
    return t


CASES = {
    "unknown volume (inspect)": ["volume", "inspect", "nope"],
    "unknown volume (snapshot)": ["volume", "snapshot", "nope"],
    "unknown volume (rm)": ["volume", "rm", "nope"],
    "unknown volume (clone)": ["volume", "clone", "nope", "x"],
    "unknown volume (export)": ["volume", "export", "nope", "-o", "{tmp}/x.tar"],
    "name with slash": ["volume", "create", "a/b"],
    "name dot-dot": ["volume", "create", ".."],
    "name with shell metacharacters": ["volume", "create", "x;rm -rf /"],
    "name with command substitution": ["volume", "snapshot", "$(id)"],
    "empty name": ["volume", "create", ""],
    "clone to a bad name": ["volume", "clone", "v", "../x"],
    "keep-as a bad name": ["volume", "rollback", "v", "--keep-as", "a b"],
    "tag with slash": ["volume", "snapshot", "v", "--tag", "x/y"],
    "reserved tag": ["volume", "snapshot", "v", "--tag", "seed"],
    "duplicate tag": ["volume", "snapshot", "v", "--tag", "t1"],
    "rollback to unknown tag": ["volume", "rollback", "v", "--to", "nope"],
    "clone from unknown tag": ["volume", "clone", "v", "w", "--from", "nope"],
    "diff from unknown tag": ["volume", "diff", "v", "--from", "nope"],
    "diff from after to": ["volume", "diff", "v", "--from", "t1", "--to", "seed"],
    "create existing": ["volume", "create", "v"],
    "clone onto existing": ["volume", "clone", "v", "other"],
    "keep-as existing": ["volume", "rollback", "v", "--keep-as", "other"],
    "import existing": ["volume", "import", "v", "{tmp}/x.tar"],
    "import missing file": ["volume", "import", "new", "{tmp}/missing.tar"],
    "import a tar writing through a symlink": ["volume", "import", "new", "{evil}"],
    "import a tar climbing with ..": ["volume", "import", "new", "{dotdot}"],
    "import a non-tar": ["volume", "import", "new", "{junk}"],
    "export into a directory": ["volume", "export", "v", "-o", "{tmp}"],
    "export into a missing directory": ["volume", "export", "v", "-o", "{tmp}/no/such/x.tar"],
    "label without =": ["volume", "create", "n", "--label", "oops"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, cli, store_with_volume: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.tar").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    fmt = {"tmp": str(tmp_path), "evil": str(_hostile_tar(tmp_path)),
           "dotdot": str(_dotdot_tar(tmp_path)), "junk": str(tmp_path / "junk")}
    args = [a.format(**fmt) for a in CASES[case]]
    before = _fingerprint(store_with_volume)
    p = cli(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volmerge: error: "), p.stderr
    assert _fingerprint(store_with_volume) == before
    assert not (tmp_path / "outside" / "pwned").exists()
    assert not (tmp_path.parent / "pwned").exists()


def test_rm_refuses_while_used(vm, root: Path, cli) -> None:  # type: ignore[no-untyped-def]
    vm.attach("u", "c1", None)
    try:
        p = cli("volume", "rm", "u")
        assert p.returncode == 2 and "in use" in p.stderr
        p = cli("volume", "rollback", "u")
        assert p.returncode == 2 and "in use" in p.stderr
        p = cli("volume", "snapshot", "u")
        assert p.returncode == 2 and "--pause" in p.stderr
        assert cli("volume", "ls", "-q").stdout.split() == ["u"]
    finally:
        vm.detach("u", "c1")
    assert cli("volume", "prune").stdout.split() == ["u"]


def test_cli_commands_end_to_end(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    assert cli("volume", "create", "app", "--label", "team=ops").returncode == 0
    insp = json.loads(cli("volume", "inspect", "app", "--json").stdout)
    assert insp["labels"] == {"team": "ops"} and [x["role"] for x in insp["layers"]] == ["seed", "live"]
    src = tmp_path / "src"
    write(src, {"f": "1"})
    subprocess.run(["tar", "-C", src, "-cf", tmp_path / "a.tar", "."], check=True)
    assert cli("volume", "import", "data", str(tmp_path / "a.tar")).returncode == 0
    assert cli("volume", "snapshot", "data", "--tag", "t").stdout.strip() == "t"
    assert cli("volume", "clone", "data", "data2", "--from", "t").returncode == 0
    assert cli("volume", "rollback", "data", "--to", "t").stdout.strip() == "data: at t"
    assert "frozen layers" in cli("volume", "compact", "data").stdout
    assert cli("volume", "export", "data2", "-o", str(tmp_path / "out.tar")).returncode == 0
    with tarfile.open(tmp_path / "out.tar") as t:
        assert "./f" in t.getnames()
    ls = json.loads(cli("volume", "ls", "--json").stdout)
    assert sorted(v["name"] for v in ls) == ["app", "data", "data2"]
    assert "LAYER" in cli("volume", "inspect", "data2").stdout
    assert cli("volume", "rm", "app", "data", "data2").returncode == 0
    assert cli("volume", "rm", "-f", "gone").returncode == 0


def test_a_tag_cannot_shadow_a_snapshot_id(vm, cli) -> None:  # type: ignore[no-untyped-def]
    """Points are named by tag or id (the newest match wins): a tag equal to
    an older snapshot's id made ``rollback --to ID`` land on the tagged one."""
    vm.create("t")
    first = vm.snapshot("t")
    p = cli("volume", "snapshot", "t", "--tag", first.id)
    assert p.returncode == 2, p.stderr
    assert p.stderr == (f"volmerge: error: invalid snapshot tag {first.id!r}: it is the id of "
                        "another snapshot of volume 't'\n")
    assert [s.id for s in vm.get("t").snapshots] == [first.id]
