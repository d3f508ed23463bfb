"""`volmerge demo`: the upgrade story, and loading fixture images with --only."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_tells_the_upgrade_story_and_checks_it(cli, root: Path) -> None:
    for _ in range(2):  # a second run in the same store starts clean
        proc = cli("demo", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = " ".join(proc.stdout.split())
        for claim in ("run v1", "--socket-activate 18080:8080", "preview", "rehearse",
                      "upgraded to v2", "0 refused", "rolled back automatically",
                      "back on v1", "1 row of notes in notes.db", "demo passed"):
            assert claim in out, claim
    assert cli("ps", "-aq").stdout.strip() == ""  # the demo removed what it started


def test_demo_only_loads_and_lists_fixture_images(cli, root: Path) -> None:
    proc = cli("demo", "--only", "busybox", "--only", "python", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ref in ("localhost/volmerge-fixture/busybox", "localhost/volmerge-fixture/python"):
        assert ref in proc.stdout
    assert "demo passed" in proc.stdout


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


def test_demo_stack_upgrades_app_and_postgres_together(cli, tmp_path_factory) -> None:
    """The notes app with its notes in PostgreSQL: 15 -> 16 with the app's new
    schema in one transaction, then a broken app release (which migrated the
    database further) that takes the database back with it."""
    # a short store path: PostgreSQL's unix sockets live under it (107 bytes at most)
    root = str(tmp_path_factory.mktemp("st") / "root")
    try:
        proc = cli("--root", root, "demo", "--stack", "--json", timeout=300)
        out = json.loads(proc.stdout)
        steps = {s["title"]: s for s in out["steps"]}
        assert proc.returncode == 0 and out["ok"] is True, \
            [(s["title"], s["detail"]) for s in out["steps"] if not s["ok"]]
        text = " ".join(" ".join(s["detail"] for s in out["steps"]).split())
        for claim in ("db (PostgreSQL 15) healthy", "[pg-major] PostgreSQL 15 -> 16",
                      "db 15 -> 16", "migrated the database to schema 3", "both rolled back"):
            assert claim in text, claim
        # what `volmerge compose exec db psql` read in the db service: the notes
        # are rows of PostgreSQL, in v2's schema after the upgrade and after the
        # broken release's rollback (v3's schema 3 gone with it)
        notes = ["buy milk", "call the plumber", "it's fine'); DROP TABLE notes; --"]
        assert steps["use it"]["pg"]["notes"] == notes
        up = steps["upgrade"]["pg"]
        assert up["server_version"].startswith("16.") and up["schema"] == 2
        assert up["columns"] == ["id", "content", "created", "pinned"] and up["notes"] == notes
        back = steps["try v3"]["pg"]
        assert back["server_version"].startswith("16.") and back["schema"] == 2
        assert back["columns"] == up["columns"] and back["notes"] == [*notes, "written on v2"]
        # v3 did migrate the database (it answered on schema 3) before it failed
        assert {"version": 3, "schema": 3, "storage": "postgresql"} in steps["try v3"]["seen"]
        assert set(steps["upgrade"]["downtime"]) == {"db", "app"}
        assert cli("--root", root, "ps", "-aq").stdout.strip() == ""  # all removed
        assert "notesstack" not in cli("--root", root, "volume", "ls").stdout
    finally:  # a failed claim stops the story before its clean-up
        cli("--root", root, "compose", "-f", f"{root}/demo-stack/compose.yaml", "-p",
            "notesstack", "down", "-v")
        from volmerge.runtime import sys as rsys

        rsys.umount_tree(root)
