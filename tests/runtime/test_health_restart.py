"""Health checks (command, TCP, HTTP; wait --healthy) and restart policies."""

from __future__ import annotations

import json
import time

import pytest

from volmerge.runtime.errors import NotDone
from volmerge.runtime.options import HealthConfig, RestartPolicy, RunOptions
from volmerge.runtime.polling import wait_until
from volmerge.runtime.records import pid_alive

LOOP = ["/bin/sh", "-c", "while true; do sleep 0.05; done"]


def test_health_cmd_drives_wait_healthy(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=LOOP, health=HealthConfig(
        test=["CMD-SHELL", "test -f /tmp/ready"], interval=0.2, timeout=2, retries=100)))
    engine.start(c.id)
    with pytest.raises(NotDone, match="not healthy"):
        engine.wait(c.id, healthy=True, timeout=0.8)
    assert engine.get(c.id).health == "starting"
    engine.exec(c.id, ["touch", "/tmp/ready"])
    assert engine.wait(c.id, healthy=True, timeout=10) == "healthy"
    h = engine.health(c.id)
    assert h.status == "healthy" and h.log and h.log[-1]["exit_code"] == 0
    engine.remove(c.id, force=True)


def test_unhealthy_after_retries(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=LOOP, health=HealthConfig(
        test=["CMD", "/bin/false"], interval=0.1, timeout=2, retries=2)))
    engine.start(c.id)
    with pytest.raises(NotDone, match="unhealthy"):
        engine.wait(c.id, healthy=True, timeout=10)
    assert engine.health(c.id).failing_streak >= 2
    engine.remove(c.id, force=True)


def test_image_healthcheck_and_http_probe(cli, make_image, executor):
    img = make_image({"config": {
        "Cmd": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/"],
                        "Interval": 200_000_000, "Retries": 50}}}, "web",
        {"www/index.html": "hello\n"})
    cid = cli("run", "-d", "--runtime", executor, img).stdout.strip()
    assert cli("wait", "--healthy", "--timeout", "15", cid).stdout.strip() == "healthy"
    assert "(healthy)" in cli("ps").stdout
    assert json.loads(cli("inspect", "--json", cid).stdout)[0]["health"] == "healthy"
    cli("rm", "-f", cid)
    # the same server checked from outside: TCP and HTTP probes in its netns
    for probe in (["--health-tcp", "8080"], ["--health-http", "http://localhost:8080/index.html"]):
        cid = cli("run", "-d", "--runtime", executor, "--health-interval", "0.2s", *probe,
                  img).stdout.strip()
        p = cli("wait", "--healthy", "--timeout", "15", cid)
        assert p.returncode == 0 and p.stdout.strip() == "healthy", p.stderr
        cli("rm", "-f", cid)


def test_wait_healthy_fails_on_exit(cli, busybox_rootfs):
    cid = cli("run", "-d", "--health-cmd", "true", "--health-interval", "5s", str(busybox_rootfs),
              "/bin/sh", "-c", "exit 4").stdout.strip()
    p = cli("wait", "--healthy", "--timeout", "10", cid)
    assert p.returncode == 1 and "exited" in p.stderr
    cli("rm", cid)


def test_restart_on_failure_with_limit(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=["/bin/sh", "-c", "exit 3"],
                                 restart=RestartPolicy("on-failure", 2)))
    engine.start(c.id)
    assert engine.wait(c.id, timeout=15) == 3
    c = engine.get(c.id)
    assert c.state == "exited" and c.restart_count == 2
    engine.remove(c.id)


def test_restart_always_until_stopped(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=["/bin/sh", "-c", "sleep 0.1"],
                                 restart=RestartPolicy("always")))
    engine.start(c.id)
    deadline = time.monotonic() + 15
    while engine.get(c.id).restart_count < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.get(c.id).restart_count >= 2
    supervisor = engine.get(c.id)  # its owner applies the restart policy
    engine.stop(c.id, timeout=2)
    c = engine.get(c.id)
    assert c.state == "exited"
    # a stopped container stays stopped: the one process that could restart
    # it ends, and it is still exited after that
    assert wait_until(lambda: not pid_alive(supervisor.owner_pid, supervisor.owner_start),
                      timeout=15)
    assert engine.get(c.id).state == "exited"
    engine.remove(c.id)


def test_on_failure_does_not_restart_success(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=["/bin/true"],
                                 restart=RestartPolicy("on-failure")))
    engine.start(c.id)
    assert engine.wait(c.id, timeout=10) == 0
    assert engine.get(c.id).restart_count == 0
    engine.remove(c.id)
