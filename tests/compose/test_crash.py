"""A stack upgrade killed (SIGKILL) inside the first service's transaction
and between two services, then `compose recover`: every service back on
the stack generation it had, data included.  Real containers, the CLI."""

from __future__ import annotations

import json
import signal

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
    assert cli(*c, "down", "-v").returncode == 0
