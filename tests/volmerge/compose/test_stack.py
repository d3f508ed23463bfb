"""Real stacks: `volmerge compose` with the busybox fixture image, through
the CLI, each test in a network namespace of its own.

A web server and a client that reaches it by service name once it is
healthy; ps, exec, a second up that touches nothing, a changed service
recreated with its volume kept, down -v.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("own_netns")

STACK = """
services:
  init:
    image: {image}
    command: ["sh", "-c", "echo ${{GREETING:-hello}} > /www/index.html"]
    volumes: [site:/www]
  web:
    image: {image}
    command: ["httpd", "-f", "-p", "8000", "-h", "/www"]
    volumes: [site:/www]
    networks:
      back:
        aliases: [www]
    depends_on:
      init: {{condition: service_completed_successfully}}
    environment: {{REV: "{web_rev}"}}
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://localhost:8000/"]
      interval: 100ms
      retries: 100
  client:
    image: {image}
    command: ["sh", "-c", "wget -q -O /tmp/got http://web:8000/; exec sleep 1000"]
    environment: {{REV: "{client_rev}"}}
    stop_signal: SIGKILL
    networks: [back]
    depends_on:
      web:
        condition: service_healthy
volumes:
  site: {{}}
networks:
  back: {{}}
"""


def _write(d: Path, image: str, web_rev: str = "1", client_rev: str = "1") -> Path:
    f = d / "compose.yaml"
    f.write_text(STACK.format(image=image, web_rev=web_rev, client_rev=client_rev))
    return f


def _ps(cli, f: Path) -> dict[str, dict]:
    p = cli("compose", "-f", str(f), "-p", "shop", "ps", "-a", "--json")
    assert p.returncode == 0, p.stderr
    return {r["Service"]: r for r in json.loads(p.stdout)}


def test_stack_up_reach_by_name_idempotent_recreate_down(cli, image, tmp_path):
    f = _write(tmp_path, image)
    c = ["compose", "-f", str(f), "-p", "shop"]
    p = cli(*c, "up", "-d")
    assert p.returncode == 0, p.stderr
    rows = _ps(cli, f)
    assert {r["Name"] for r in rows.values()} == {"shop-init-1", "shop-web-1", "shop-client-1"}
    assert (rows["init"]["State"], rows["init"]["ExitCode"]) == ("exited", 0)
    assert rows["web"]["State"] == rows["client"]["State"] == "running"
    assert rows["web"]["Health"] == "healthy" and rows["web"]["Networks"] == "shop_back"
    # the client fetched from "web" at its start: web was healthy by then, and found by name
    got = cli(*c, "exec", "client", "cat", "/tmp/got")
    assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
    for host in ("shop-web-1", "www"):  # the container's name, the alias
        got = cli(*c, "exec", "client", "wget", "-q", "-O-", f"http://{host}:8000/")
        assert got.stdout == "hello\n", got.stderr

    # the same file again: nothing touched
    p = cli(*c, "up", "-d")
    assert p.returncode == 0 and "Created" not in p.stderr, p.stderr
    again = _ps(cli, f)
    assert {s: r["ID"] for s, r in again.items()} == {s: r["ID"] for s, r in rows.items()}

    # data written to web's volume, then web changed: recreated, the data kept,
    # the client (unchanged) left alone
    assert cli(*c, "exec", "web", "sh", "-c", "echo kept > /www/extra").returncode == 0
    _write(tmp_path, image, web_rev="2")
    p = cli(*c, "up", "-d")
    assert p.returncode == 0, p.stderr
    after = _ps(cli, f)
    assert after["web"]["ID"] != rows["web"]["ID"] and after["client"]["ID"] == rows["client"]["ID"]
    assert after["init"]["ID"] == rows["init"]["ID"]
    got = cli(*c, "exec", "web", "cat", "/www/extra")
    assert got.stdout == "kept\n", got.stderr

    # a one-off container, removed after; the logs of a service
    got = cli(*c, "run", "--rm", "client", "sh", "-c", "wget -q -O- http://web:8000/; echo out")
    assert (got.returncode, got.stdout) == (0, "hello\nout\n"), got.stderr
    assert set(_ps(cli, f)) == {"init", "web", "client"}
    assert cli(*c, "exec", "client", "sh", "-c", "echo logged >/proc/1/fd/1").returncode == 0
    got = cli(*c, "logs", "client")
    assert got.stdout == "shop-client-1  | logged\n", got.stderr

    p = cli(*c, "down", "-v")
    assert p.returncode == 0, p.stderr
    assert _ps(cli, f) == {}
    nets = cli("network", "ls")
    assert "shop_back" not in nets.stdout
    vols = cli("volume", "ls")
    assert "shop_site" not in vols.stdout


def test_bad_file_changes_nothing(cli, image, tmp_path):
    f = tmp_path / "compose.yaml"
    f.write_text(f"services:\n  a:\n    image: {image}\n    build: .\n    secrets: [s]\n")
    p = cli("compose", "-f", str(f), "up", "-d")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "services.a.build" in p.stderr and "services.a.secrets" in p.stderr
    assert "Traceback" not in p.stderr
    assert cli("ps", "-a", "-q").stdout == ""


def test_extra_hosts_in_the_container(cli, image, tmp_path):
    f = tmp_path / "compose.yaml"
    f.write_text(f"services:\n  a:\n    image: {image}\n    command: [cat, /etc/hosts]\n"
                 "    extra_hosts: ['db.example:192.0.2.7', 'v6=2001:db8::7']\n")
    p = cli("compose", "-f", str(f), "-p", "eh", "run", "--rm", "a")
    assert p.returncode == 0, p.stderr
    assert {"192.0.2.7\tdb.example", "2001:db8::7\tv6"} <= set(p.stdout.splitlines())
    assert cli("compose", "-f", str(f), "-p", "eh", "down").returncode == 0
    f.write_text(f"services:\n  a:\n    image: {image}\n    extra_hosts: ['db:1.2.3']\n")
    p = cli("compose", "-f", str(f), "-p", "eh", "up", "-d")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "services.a.extra_hosts" in p.stderr
    assert cli("ps", "-a", "-q").stdout == ""
