"""The volume locks between real processes (docs/architecture.md, "Commit
points"): ``volume-NAME`` (one volume's manifest) and ``volumes`` (the set of
volumes).  CLI commands started at the same moment: none is lost, none
tears a manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.procs import run_together


def test_snapshots_clones_and_creates_at_once(cli, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    tar = tmp_path / "v.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tar), "."], check=True)
    cli("volume", "import", "v", str(tar), check=True)
    before = len(json.loads(cli("volume", "inspect", "v", "--json", check=True).stdout)["snapshots"])
    cmds = [("volume", "snapshot", "v", "--tag", f"t{i}") for i in range(3)]
    cmds += [("volume", "create", f"w{i}") for i in range(2)]
    cmds += [("volume", "clone", "v", f"c{i}") for i in range(2)]
    results = run_together(root, cmds)
    assert [code for code, _, _ in results] == [0] * len(cmds), [e for _, _, e in results]
    snaps = json.loads(cli("volume", "inspect", "v", "--json", check=True).stdout)["snapshots"]
    assert len(snaps) == before + 3
    assert sorted(s["tag"] for s in snaps if s["tag"]) == ["t0", "t1", "t2"]
    assert sorted(cli("volume", "ls", "-q").stdout.split()) == [
        "c0", "c1", "v", "w0", "w1"]
    for name in ("c0", "c1"):
        p = cli("volume", "export", name, "-o", str(tmp_path / f"{name}.out.tar"), check=True)
        assert p.returncode == 0
        listing = subprocess.run(["tar", "-tf", str(tmp_path / f"{name}.out.tar")],
                                 capture_output=True, text=True, check=True).stdout
        assert "f" in {ln.strip("./") for ln in listing.splitlines()}
    cli("volume", "rm", "c0", "c1", "v", "w0", "w1", check=True)
