"""The runtime's locks between real processes (docs/architecture.md, "Commit
points"): ``container-ID`` (one container's start, stop, removal) and
``containers`` (names and records), contended by CLI commands started at the
same moment.  Each command runs whole or is refused in one line; the
container is never left half started or half removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.procs import run_together

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.05; done"


def _together(root: Path, commands: list[tuple[str, ...]]) -> list[tuple[int, str, str]]:
    out = run_together(root, commands)
    for code, _, err in out:
        assert "Traceback" not in err and "database is locked" not in err, err
        assert code in (0, 1, 2), (code, err)
        if code:
            assert sum(ln.startswith("volmerge: error: ") for ln in err.splitlines()) == 1, err
    return out


def test_one_container_stopped_started_and_removed_at_once(cli, image, root: Path) -> None:
    for _ in range(2):
        cli("run", "-d", "--name", "c", "--network", "none", image, "/bin/sh", "-c", LOOP,
            check=True)
        results = _together(root, [("stop", "-t", "2", "c"), ("start", "c"), ("stop", "-t", "2", "c"),
                                   ("start", "c"), ("rm", "-f", "c"), ("rm", "-f", "c")])
        assert any(code == 0 for code, _, _ in results[4:]), results  # one removal ran
        assert cli("ps", "-aq").stdout == "", results
        assert os.listdir(root / "containers") == []


def test_names_taken_at_once(cli, image, root: Path) -> None:
    """Six processes create a container of the same name (``containers``):
    one gets it, the others are refused; six of different names all run."""
    results = _together(root, [("create", "--name", "same", image, "true")
                               for _ in range(6)])
    assert sorted(code for code, _, _ in results) == [0, 2, 2, 2, 2, 2], results
    assert all("same" in err for code, _, err in results if code)
    results = _together(root, [("create", "--name", f"n{i}", image, "true")
                               for i in range(6)])
    assert [code for code, _, _ in results] == [0] * 6, results
    names = sorted(c["name"] for c in json.loads(cli("ps", "-a", "--json").stdout))
    assert names == ["n0", "n1", "n2", "n3", "n4", "n5", "same"]
    cli("rm", *names, check=True)
