"""`volmerge compose upgrade`: the services whose image changed, upgraded
with their data in dependency order; a failing service rolls back the ones
upgraded before it.  Real containers, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("own_netns")

STACK = """
services:
  db:
    image: localhost/app:{db}
    volumes: [dbdata:/data]
    stop_signal: SIGKILL
    healthcheck: {{test: [CMD, test, -e, /ok], interval: 100ms, retries: 3}}
  web:
    image: localhost/app:{web}
    volumes: [webdata:/data]
    stop_signal: SIGKILL
    healthcheck: {{test: [CMD, test, -e, /ok], interval: 100ms, retries: 3}}
    depends_on: {{db: {{condition: service_healthy}}}}
volumes: {{dbdata: {{}}, webdata: {{}}}}
"""


def _write(d: Path, db: str, web: str) -> Path:
    f = d / "compose.yaml"
    f.write_text(STACK.format(db=db, web=web))
    return f


def test_stack_upgrade_and_rollback_of_every_service(cli, app_images, tmp_path):
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert cli(*c, "exec", "db", "sh", "-c", "echo mine > /data/mine").returncode == 0

    # nothing changed: nothing to upgrade
    p = cli(*c, "upgrade", "--dry-run")
    assert p.returncode == 0 and "nothing to upgrade" in p.stdout, p.stderr

    f = _write(tmp_path, "2", "2")
    p = cli(*c, "upgrade", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert [r["service"] for r in plan] == ["db", "web"]  # the database first
    assert cli(*c, "ps", "--json").stdout.count("localhost/app:1") == 2  # nothing changed

    p = cli(*c, "upgrade", "--health-timeout", "20")
    assert p.returncode == 0, p.stderr
    assert "Upgraded db" in p.stdout and "Upgraded web" in p.stdout
    rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert {s: r["Image"] for s, r in rows.items()} == {"db": "localhost/app:2",
                                                        "web": "localhost/app:2"}
    got = cli(*c, "exec", "db", "cat", "/data/seed.txt", "/data/mine")
    assert got.stdout == "2\nmine\n", got.stderr  # the image's file merged, the data kept
    # up after the upgrade: the containers match the file, nothing is recreated
    p = cli(*c, "up", "-d")
    assert p.returncode == 0 and "Created" not in p.stderr, p.stderr
    assert {r["Service"]: r["ID"] for r in json.loads(cli(*c, "ps", "--json").stdout)} == \
        {s: r["ID"] for s, r in rows.items()}

    # db upgrades fine, web fails its health check: the rehearsal says so, changing
    # nothing; the upgrade itself puts both back where they were
    _write(tmp_path, "3", "bad")
    p = cli(*c, "upgrade", "--rehearse", "--health-timeout", "20")
    assert p.returncode == 1 and "rehearsal failed at service web" in p.stderr, p.stderr
    assert "Rehearsal passed" in p.stderr  # db's
    p = cli(*c, "upgrade", "--health-timeout", "20")
    assert p.returncode == 1, p.stderr
    assert "stopped at service web" in p.stderr and "(db)" in p.stderr
    rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert {s: (r["Image"], r["State"]) for s, r in rows.items()} == {
        "db": ("localhost/app:2", "running"), "web": ("localhost/app:2", "running")}
    got = cli(*c, "exec", "db", "cat", "/data/seed.txt", "/data/mine")
    assert got.stdout == "2\nmine\n", got.stderr

    # the stack's history: one generation; rolled back as a whole, data written since
    # refused unless discarded
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [(g["generation"], g["state"], [s["service"] for s in g["services"]])
            for g in hist] == [(1, "current", ["db", "web"]), (2, "failed", ["db", "web"])]
    assert cli(*c, "exec", "db", "sh", "-c", "echo later > /data/later").returncode == 0
    p = cli(*c, "rollback")
    assert p.returncode == 2 and "by db: pass --discard-new-data" in p.stderr, p.stderr
    assert "Rolled back" not in p.stderr  # all or nothing
    # or kept as volumes PREFIX-SERVICE; a name taken, or both options: refused, nothing moved
    p = cli(*c, "rollback", "--discard-new-data", "--keep-new-data-as", "later")
    assert p.returncode == 2 and "exclude each other" in p.stderr, p.stderr
    assert cli("volume", "create", "later-web").returncode == 0
    p = cli(*c, "rollback", "--keep-new-data-as", "later")
    assert p.returncode == 2 and "'later-web' already exists" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert cli(*c, "ps", "--json").stdout.count("localhost/app:2") == 2
    assert [g["state"] for g in json.loads(cli(*c, "history", "--json").stdout)] == \
        ["current", "failed"]
    assert cli("volume", "rm", "later-web").returncode == 0
    p = cli(*c, "rollback", "--keep-new-data-as", "later")
    assert p.returncode == 0, p.stderr
    rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert {s: (r["Image"], r["State"]) for s, r in rows.items()} == {
        "db": ("localhost/app:1", "running"), "web": ("localhost/app:1", "running")}
    got = cli(*c, "exec", "db", "cat", "/data/seed.txt", "/data/mine")
    assert got.stdout == "1\nmine\n", got.stderr
    assert cli(*c, "exec", "db", "test", "-e", "/data/later").returncode != 0
    vols = cli("volume", "ls", "-q").stdout.split()
    assert {"later-db", "later-web"} <= set(vols), vols
    got = cli("run", "--rm", "--network", "none", "-v", "later-db:/kept", "localhost/app:1",
              "cat", "/kept/later")
    assert got.stdout == "later\n", got.stderr  # what db wrote since the upgrade, kept
    assert cli("volume", "rm", "later-db", "later-web").returncode == 0
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [g["state"] for g in hist] == ["rolled-back", "failed"]
    p = cli(*c, "rollback")
    assert p.returncode == 2 and "no stack upgrade to roll back" in p.stderr, p.stderr

    assert cli(*c, "down", "-v").returncode == 0
    assert cli("ps", "-a", "-q").stdout == ""
