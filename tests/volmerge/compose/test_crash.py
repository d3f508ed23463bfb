"""A stack upgrade killed (SIGKILL) inside the first service's transaction,
between two services and at two instants, then `compose recover`: every
service on one and the same stack generation, data included.  Real
containers, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .test_upgrade import _write

pytestmark = pytest.mark.usefixtures("own_netns")


def test_kill_inside_and_between_services_then_recover(cli, app_images, tmp_path):
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert cli(*c, "exec", "db", "sh", "-c", "echo mine > /data/mine").returncode == 0
    _write(tmp_path, "2", "2")
    for point in ("upgrade.committed", "compose.service-committed"):
        p = cli(*c, "upgrade", "--health-timeout", "20", env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point} never reached: {p.stderr}"
        p = cli(*c, "recover")
        assert p.returncode == 0 and "Rolled back stack generation" in p.stdout, p.stderr
        rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
        assert {s: (r["Image"], r["State"]) for s, r in rows.items()} == {
            "db": ("localhost/app:1", "running"), "web": ("localhost/app:1", "running")}, point
        got = cli(*c, "exec", "db", "cat", "/data/seed.txt", "/data/mine")
        assert got.stdout == "1\nmine\n", (point, got.stderr)
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [g["state"] for g in hist] == ["failed", "failed"]
    assert cli(*c, "recover").stdout == "Nothing to recover.\n"

    # killed at instants inside the two-service upgrade: after recover, every
    # service is on the same stack generation, old or new, its data intact
    env = dict(os.environ, VOLMERGE_ROOT=str(tmp_path / "root"))
    for delay in (1.0, 2.5):
        proc = subprocess.Popen([sys.executable, "-m", "volmerge", *c, "upgrade",
                                 "--health-timeout", "20"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert cli(*c, "recover").returncode == 0
        rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
        images = {r["Image"] for r in rows.values()}
        assert len(images) == 1 and len(rows) == 2, (delay, rows)
        assert all(r["State"] == "running" for r in rows.values()), (delay, rows)
        want = "1" if images == {"localhost/app:1"} else "2"
        got = cli(*c, "exec", "db", "cat", "/data/seed.txt", "/data/mine")
        assert got.stdout == f"{want}\nmine\n", (delay, got.stderr)
        if want == "2":
            assert cli(*c, "rollback", "--discard-new-data").returncode == 0
    assert cli(*c, "down", "-v").returncode == 0
