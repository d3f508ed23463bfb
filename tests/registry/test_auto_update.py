"""``volmerge auto-update`` with the registry policy: a container follows a
tag in a real registry; when the tag moves, the new image is pulled and the
container upgraded with its data."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import APP, _app_image
from volmerge.autoupdate import LABEL

from .server import PASSWORD, USER, Registry


def _id(cli, ref: str) -> str:  # type: ignore[no-untyped-def]
    info = json.loads(cli("image", "inspect", ref, "--json").stdout)
    info = info[0] if isinstance(info, list) else info
    return str(info["Id"]).removeprefix("sha256:")


def test_registry_policy_pulls_and_upgrades(cli, registry: Registry, env, tmp_path: Path) -> None:
    for v in (1, 2):
        r = cli("image", "load", str(_app_image(tmp_path / f"app{v}.tar", v)))
        assert r.returncode == 0, r.stderr
    r = cli("login", "-u", USER, "--password-stdin", registry.host, input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    follow = registry.ref("app:stable")
    assert cli("push", "-q", APP[1], follow, env=env).returncode == 0
    r = cli("pull", "-q", follow, env=env)
    assert r.returncode == 0, r.stderr
    r = cli("run", "-d", "--name", "app", "--network", "none", "-l", f"{LABEL}=registry",
            "-v", "app-data:/data", follow)
    assert r.returncode == 0, r.stderr
    try:
        cli("exec", "app", "sh", "-c", "echo mine > /data/mine.txt")
        r = cli("auto-update", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["updated"] == "false"

        assert cli("push", "-q", APP[2], follow, env=env).returncode == 0  # the tag moves
        r = cli("auto-update", "--dry-run", "--json", env=env)
        (u,) = json.loads(r.stdout)
        assert r.returncode == 0 and u["updated"] == "pending", r.stdout
        assert u["current"] == _id(cli, APP[1]) and u["new"] == _id(cli, APP[2])

        r = cli("auto-update", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["updated"] == "true"
        info = json.loads(cli("inspect", "app", "--json").stdout)[0]
        assert info["image_id"] == _id(cli, APP[2])
        out = cli("exec", "app", "sh", "-c", "cat /data/mine.txt /data/added.txt").stdout
        assert out == "mine\nnew in v2\n"
    finally:
        cli("rm", "-f", "app")
        for name in [n for n in cli("ps", "-aq").stdout.split()]:
            cli("rm", "-f", name)
