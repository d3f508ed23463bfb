"""`volmerge demo` (interim): load the fixture images into the store, list them."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_loads_and_lists_every_fixture_image(cli, root: Path) -> None:
    proc = cli("demo", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ref in ("localhost/volmerge-fixture/busybox", "localhost/volmerge-fixture/python",
                "localhost/volmerge-fixture/postgres", "localhost/volmerge-demo/notes"):
        assert ref in proc.stdout
    assert "demo passed" in proc.stdout
    listed = cli("image", "ls")
    if listed.returncode == 0:  # the image commands may land after this test
        assert "volmerge-demo/notes" in listed.stdout


def test_demo_json_and_rerun(cli) -> None:
    for _ in range(2):  # loading again is harmless: same images, same ids
        proc = cli("demo", "--only", "busybox", "--only", "demo-v1", "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["ok"] is True
        assert [s["kind"] for s in out["steps"]] == ["busybox", "demo-v1"]
        tags = sorted(t for img in out["images"] for t in img["tags"])
        assert tags == ["localhost/volmerge-demo/notes:1", "localhost/volmerge-fixture/busybox:latest"]


def test_demo_unknown_image_is_bad_input(cli, root: Path) -> None:
    proc = cli("demo", "--only", "nginx")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "volmerge: error: unknown demo image 'nginx' (choose from busybox, python, postgres15, "
        "postgres16, demo-v1, demo-v2, demo-v3)"]
    assert not root.exists()  # nothing changed


def test_demo_exits_1_when_a_step_fails(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("the fixture cache cannot live under a file\n")
    proc = cli("demo", "--only", "busybox", env={"VOLMERGE_FIXTURE_CACHE": str(blocker / "cache")})
    assert proc.returncode == 1
    assert "✗ busybox" in proc.stdout and "demo failed" in proc.stdout
