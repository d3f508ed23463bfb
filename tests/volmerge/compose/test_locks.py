"""The stack's lock (``compose-PROJECT``) between real processes: two stack
upgrades and a recover of one project started together; each runs whole or
is refused in one line (exit 2), and every service ends on one stack
generation with its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_upgrade import _write

pytestmark = pytest.mark.usefixtures("own_netns")
REFUSED = "project st: another compose upgrade, rollback or recover is running"


def test_two_stack_upgrades_and_a_recover_at_once(cli, app_images, tmp_path):
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert cli(*c, "exec", "db", "sh", "-c", "echo mine > /data/mine").returncode == 0
    _write(tmp_path, "2", "2")
    env = dict(os.environ, VOLMERGE_ROOT=str(tmp_path / "root"))
    cmds = [[*c, "upgrade", "--health-timeout", "20"], [*c, "upgrade", "--health-timeout", "20"],
            [*c, "recover"]]
    procs = [subprocess.Popen([sys.executable, "-m", "volmerge", *a], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in cmds]
    results = []
    for p in procs:
        so, se = p.communicate(timeout=240)
        results.append((p.returncode, se))
    for code, err in results:
        assert "Traceback" not in err, err
        assert code == 0 or (code == 2 and REFUSED in err and len(err.splitlines()) == 1), \
            (code, err)
    assert any(code == 0 for code, _ in results), results  # the first to take the lock ran
    assert any(code == 2 for code, _ in results), "no command met another: no contention"
    tag = "localhost/app:2" if 0 in (results[0][0], results[1][0]) else "localhost/app:1"
    rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert {s: (r["Image"], r["State"]) for s, r in rows.items()} == {
        "db": (tag, "running"), "web": (tag, "running")}, results
    assert cli(*c, "exec", "db", "cat", "/data/mine").stdout == "mine\n"
    assert cli(*c, "recover").stdout == "Nothing to recover.\n"
    assert cli(*c, "down", "-v").returncode == 0
