"""Networking with real containers through `volmerge run`, with both
executors: names resolve between containers, published ports reach the
container from the (test's own) host namespace, addresses are stable."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

EXECUTORS = ["runc", "builtin"]


@pytest.fixture
def bb(cli, fixture_image) -> str:  # type: ignore[no-untyped-def]
    p = cli("image", "load", str(fixture_image("busybox")))
    assert p.returncode == 0, p.stderr
    yield "localhost/volmerge-fixture/busybox:latest"
    ids = cli("ps", "-aq").stdout.split()
    if ids:
        cli("rm", "-f", *ids)


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_two_containers_talk_by_name_and_a_port_is_published(cli, bb, runtime: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("network", "create", "web", "--subnet", "10.66.0.0/24").returncode == 0
    p = cli("run", "-d", "--runtime", runtime, "--name", "httpd", "--network", "web",
            "-p", "18081:80", bb, "sh", "-c",
            "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 80 -h /www")
    assert p.returncode == 0, p.stderr
    # by name, from another container on the same network
    deadline = time.monotonic() + 10
    while True:
        p = cli("run", "--rm", "--runtime", runtime, "--network", "web", bb,
                "wget", "-qO-", "http://httpd/")
        if p.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert p.returncode == 0 and p.stdout == "hello-from-httpd\n", p.stderr
    p = cli("run", "--rm", "--runtime", runtime, "--network", "web", bb, "ping", "-c", "1", "-W", "2",
            "httpd")
    assert p.returncode == 0, p.stdout + p.stderr
    # ps and inspect show the address and the published port
    assert "0.0.0.0:18081->80/tcp" in cli("ps").stdout
    info = json.loads(cli("inspect", "httpd", "--json").stdout)[0]
    assert info["network"] == "web" and info["ip"].startswith("10.66.0.")
    assert info["ports"] == ["0.0.0.0:18081->80/tcp"]
    # the published port, from the host side (the test session's namespace)
    with urllib.request.urlopen("http://127.0.0.1:18081/", timeout=5) as r:
        assert r.read() == b"hello-from-httpd\n"
    assert cli("rm", "-f", "httpd").returncode == 0
    assert cli("network", "rm", "web").returncode == 0


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_address_stable_across_stop_start_and_reused_after_rm(cli, bb, runtime: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("network", "create", "n1", "--subnet", "10.67.0.0/24").returncode == 0
    script = "trap 'exit 0' TERM; while :; do sleep 0.1; done"

    def addr(name: str) -> str:
        p = cli("exec", name, "ip", "-4", "-o", "addr", "show", "eth0")
        assert p.returncode == 0, p.stderr
        return p.stdout.split()[3].split("/")[0]

    assert cli("run", "-d", "--runtime", runtime, "--name", "a", "--network", "n1", bb,
               "sh", "-c", script).returncode == 0
    first = addr("a")
    assert cli("stop", "-t", "2", "a").returncode == 0
    assert cli("start", "a").returncode == 0
    assert addr("a") == first
    assert cli("rm", "-f", "a").returncode == 0
    assert cli("run", "-d", "--runtime", runtime, "--name", "b", "--network", "n1", bb,
               "sh", "-c", script).returncode == 0
    assert addr("b") == first  # the released address is the lowest free one again
    p = cli("run", "-d", "--runtime", runtime, "--name", "c", "--network", "n1", "--ip", first, bb,
            "sh", "-c", script)
    assert p.returncode == 2 and "volmerge: error:" in p.stderr  # a taken address
    assert cli("rm", "-f", "b").returncode == 0
    assert cli("network", "rm", "n1").returncode == 0


def test_published_port_already_taken_is_bad_input(cli, bb) -> None:  # type: ignore[no-untyped-def]
    script = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    assert cli("run", "-d", "--name", "p1", "-p", "18082:80", bb, "sh", "-c", script).returncode == 0
    p = cli("run", "-d", "--name", "p2", "-p", "18082:80", bb, "sh", "-c", script)
    assert p.returncode == 2 and p.stderr.startswith("volmerge: error:"), p.stderr
    assert "p2" not in cli("ps", "-a").stdout
    cli("rm", "-f", "p1")


def test_unknown_network_is_bad_input(cli, bb) -> None:  # type: ignore[no-untyped-def]
    p = cli("run", "--rm", "--network", "nope", bb, "true")
    assert p.returncode == 2 and "nope" in p.stderr
