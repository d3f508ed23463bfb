"""``stop -t``: a timeout that is not a number of seconds is bad input
(NaN crashed the wait after SIGTERM was sent, leaving the container running
with a stop requested); ``-t -1`` waits without limit, as podman's does
(it used to mean SIGKILL at once)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

IMG = "localhost/volmerge-fixture/busybox:latest"


def _state(cli, name: str) -> str:  # type: ignore[no-untyped-def]
    return json.loads(cli("inspect", "--json", name).stdout)[0]["state"]


def test_stop_timeouts(cli, root, fixture_image) -> None:  # type: ignore[no-untyped-def]
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    # sh as pid 1 ignores SIGTERM: only SIGKILL (or the timeout) ends it
    assert cli("run", "-d", "--network", "none", "--name", "up", IMG,
               "sh", "-c", "while :; do sleep 0.1; done").returncode == 0
    try:
        _check(cli, root)
    finally:
        cli("rm", "-f", "up")


def _check(cli, root) -> None:  # type: ignore[no-untyped-def]
    import os

    for bad in ("nan", "inf", "-2"):
        p = cli("stop", "-t", bad, "up")
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert f"invalid -t {bad}" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert _state(cli, "up") == "running"

    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    stop = subprocess.Popen([sys.executable, "-m", "volmerge", "stop", "-t", "-1", "up"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert stop.poll() is None and _state(cli, "up") == "running"
        assert cli("kill", "up").returncode == 0
        out, err = stop.communicate(timeout=30)
    finally:
        stop.kill()
    assert stop.returncode == 0 and out == "up\n", err
    assert _state(cli, "up") == "exited"
