"""``volmerge run --add-host``: the line is in the container's /etc/hosts on
every kind of network, and stays there when the network manager rewrites
the file because a peer joined."""

from __future__ import annotations

import pytest

LOOP = "while true; do sleep 0.05; done"


@pytest.mark.parametrize("network", ["default", "none", "host"])
def test_add_host_lines_in_etc_hosts(cli, image, executor, network):
    net = [] if network == "default" else ["--network", network]
    p = cli("run", "--rm", "--runtime", executor, *net, "--add-host", "db.example:192.0.2.7",
            "--add-host", "v6=2001:db8::7", "--hostname", "me", image, "cat", "/etc/hosts")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "192.0.2.7\tdb.example" in lines and "2001:db8::7\tv6" in lines
    assert any(line.split()[1:2] == ["me"] for line in lines), p.stdout
    assert lines.index("192.0.2.7\tdb.example") < next(
        i for i, line in enumerate(lines) if line.split()[1:2] == ["me"])


def test_add_host_kept_when_a_peer_joins(cli, image):
    assert cli("network", "create", "addhostnet").returncode == 0
    p = cli("run", "-d", "--name", "a", "--network", "addhostnet", "--add-host",
            "db.example:192.0.2.7", image, "/bin/sh", "-c", LOOP)
    assert p.returncode == 0, p.stderr
    try:
        p = cli("run", "--rm", "--name", "b", "--network", "addhostnet", image, "true")
        assert p.returncode == 0, p.stderr
        hosts = cli("exec", "a", "cat", "/etc/hosts").stdout.splitlines()
        assert "192.0.2.7\tdb.example" in hosts
    finally:
        cli("rm", "-f", "a")
        cli("network", "rm", "addhostnet")
