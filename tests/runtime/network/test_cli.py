"""`volmerge network create/ls/inspect/rm` through the real CLI."""

from __future__ import annotations

import json

import pytest

from .conftest import host_state


def test_create_ls_inspect_rm(cli, root) -> None:  # type: ignore[no-untyped-def]
    before = host_state()
    p = cli("network", "create", "lan", "--subnet", "10.66.0.0/24")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "lan"
    p = cli("network", "create", "auto", "--json")
    assert p.returncode == 0, p.stderr
    auto = json.loads(p.stdout)
    assert auto["name"] == "auto" and auto["subnet"].startswith("10.89.")
    ls = cli("network", "ls")
    assert ls.returncode == 0 and "10.66.0.0/24" in ls.stdout and "NAME" in ls.stdout
    assert cli("network", "ls", "-q").stdout.split() == ["auto", "lan"]
    rows = json.loads(cli("network", "ls", "--json").stdout)
    assert {r["name"] for r in rows} == {"lan", "auto"}
    bridge = next(r["bridge"] for r in rows if r["name"] == "lan")
    assert bridge in host_state()["links"]

    # a container holding a lease keeps the network
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store

    store = Store(root)
    nm = NetworkManager(store)
    nm.connect("c1", "lan", "one", ports=["8080:80"])
    info = json.loads(cli("network", "inspect", "lan", "--json").stdout)[0]
    assert info["gateway"] == "10.66.0.1"
    assert info["containers"][0]["ip"] == "10.66.0.2"
    assert info["containers"][0]["ports"] == ["8080:80/tcp"]
    text = cli("network", "inspect", "lan").stdout
    assert "10.66.0.2" in text and "connected" in text
    p = cli("network", "rm", "auto", "lan")
    assert p.returncode == 2 and "in use" in p.stderr
    assert cli("network", "ls", "-q").stdout.split() == ["auto", "lan"]  # nothing changed
    nm.disconnect("c1", release=True)
    store.close()
    p = cli("network", "rm", "auto", "lan")
    assert p.returncode == 0, p.stderr
    assert cli("network", "ls", "-q").stdout == ""
    assert host_state() == before


@pytest.mark.parametrize("args, words", [
    (["create", "b", "--subnet", "10.66.0.128/25"], "overlaps"),
    (["create", "a", "--subnet", "10.67.0.0/24"], "already exists"),
    (["create", "c", "--subnet", "10.68.0.0/24", "--gateway", "10.69.0.1"], "not a host address"),
    (["create", "d", "--subnet", "10.68.0.1/24"], "host bits"),
    (["create", "e", "--subnet", "fd00::/64"], "IPv4"),
    (["create", "host"], "reserved"),
    (["create", "f", "--gateway", "10.1.1.1"], "--subnet"),
    (["inspect", "nope"], "does not exist"),
    (["rm", "nope"], "does not exist"),
])
def test_bad_input_exit_2(cli, nm, args, words) -> None:  # type: ignore[no-untyped-def]
    nm.create("a", subnet="10.66.0.0/24")
    before = (host_state(), nm.list())
    p = cli("network", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.startswith("volmerge: error: ") and words in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert (host_state(), nm.list()) == before


def test_help_texts() -> None:
    from typer.testing import CliRunner

    from volmerge.cli import app

    for sub in ("create", "ls", "inspect", "rm"):
        p = CliRunner().invoke(app, ["network", sub, "--help"])
        assert p.exit_code == 0 and "Usage" in p.output
