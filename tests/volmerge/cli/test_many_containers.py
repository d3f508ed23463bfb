"""A verb given several containers looks them all up first: one missing name
(or, for ``rm`` without ``-f``, one running container) is bad input — exit 2,
one line, and none of the others touched — as podman does."""

from __future__ import annotations

import json

import pytest

IMG = "localhost/volmerge-fixture/busybox:latest"


@pytest.fixture
def two(cli, fixture_image):  # type: ignore[no-untyped-def]
    """``up`` running (detached) and ``down`` created, never started."""
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    assert cli("run", "-d", "--network", "none", "--name", "up", IMG, "sleep", "300").returncode == 0
    assert cli("create", "--network", "none", "--name", "down", IMG, "true").returncode == 0
    yield
    cli("rm", "-f", "up")


def _states(cli) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c["name"]: c["state"] for c in json.loads(cli("ps", "-a", "--json").stdout)}


@pytest.mark.parametrize("argv", [
    ["stop", "-t", "1", "up", "nosuch"],     # the fast path (cli/fastlife.py)
    ["restart", "up", "nosuch"],
    ["start", "down", "nosuch"],
    ["kill", "up", "nosuch"],                # typer's commands
    ["pause", "up", "nosuch"],
    ["rm", "-f", "up", "nosuch"],
    ["rm", "down", "up"],                    # up is running
])
def test_bad_name_among_several_changes_nothing(cli, two, argv) -> None:  # type: ignore[no-untyped-def]
    before = _states(cli)
    assert before == {"up": "running", "down": "created"}
    p = cli(*argv)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
    assert ("no such container: nosuch" in p.stderr or "container up is running" in p.stderr)
    assert _states(cli) == before


def test_ps_and_inspect_json_agree(cli, two) -> None:  # type: ignore[no-untyped-def]
    """``ps --json`` and ``inspect --json`` print a container the same way
    (``ps`` lacked inspect's ``sockets``)."""
    rows = {c["name"]: c for c in json.loads(cli("ps", "-a", "--json").stdout)}
    for name in ("up", "down"):
        [one] = json.loads(cli("inspect", "--json", name).stdout)
        assert sorted(rows[name]) == sorted(one)
        assert {k: v for k, v in rows[name].items() if k != "pid"} == \
            {k: v for k, v in one.items() if k != "pid"}


def test_inspect_text_prints_lists_as_words(cli, two) -> None:  # type: ignore[no-untyped-def]
    """``ports: []`` and ``sockets: []`` (Python's repr) in the text output."""
    out = cli("inspect", "up").stdout.splitlines()
    assert "ports: " in out and "sockets: " in out, out
    assert not any("[" in line for line in out), out
