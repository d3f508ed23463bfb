"""``volmerge adopt podman:NAME``: a real podman container holding data is taken
over with its configuration and volumes; the podman container is left stopped."""

from __future__ import annotations

import json
import time

import pytest

from tests.podman import podman
from volmerge.adopt import ADOPTED_LABEL, parse_source, plan
from volmerge.errors import BadInput
from volmerge.fixtures.images import REFS

__all__ = ["podman"]

IMAGE = REFS["busybox"]
IMAGE_CONFIG = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/",
                "Labels": {"org.opencontainers.image.title": "t"}}


def _inspect(**over: object) -> dict:
    """A ``podman container inspect`` record in the shape podman 4 writes."""
    info = {
        "Id": "2a48e2e304ab" + "0" * 52, "Name": "app", "Image": "22f0" + "1" * 60,
        "ImageName": "localhost/app:1", "State": {"Status": "running", "Running": True},
        "Mounts": [
            {"Type": "volume", "Name": "data", "Source": "/v/data/_data", "Destination": "/etc",
             "RW": True},
            {"Type": "bind", "Source": "/srv/conf", "Destination": "/conf", "RW": False},
            {"Type": "volume", "Name": "f" * 64, "Source": "/v/anon/_data",
             "Destination": "/var/lib/db", "RW": True},
        ],
        "Config": {
            "Env": ["container=podman", "GREETING=hi", "PATH=/usr/bin:/bin", "TERM=xterm",
                    "HOME=/root", "HOSTNAME=2a48e2e304ab"],
            "Cmd": ["sh", "-c", "sleep 1000"], "Entrypoint": "", "WorkingDir": "/etc",
            "User": "", "Labels": {"org.opencontainers.image.title": "t", "tier": "db"},
            "Healthcheck": {"Test": ["CMD-SHELL", "test -f /etc/ok"], "Interval": 5_000_000_000,
                            "Timeout": 30_000_000_000, "Retries": 3},
            "CreateCommand": ["podman", "run", "-e", "GREETING=hi", "localhost/app:1"],
        },
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "NetworkMode": "bridge", "Memory": 64 << 20, "ReadonlyRootfs": False,
            "Tmpfs": {"/scratch": "size=1m,rw,rprivate,nosuid,nodev,tmpcopyup"},
        },
    }
    info.update(over)
    return info


# -- the plan: a pure function, no root ---------------------------------------------

def test_plan_carries_what_the_operator_asked_for() -> None:
    p = plan("podman", _inspect(), IMAGE_CONFIG)
    o = p.options
    assert (o.name, o.image, p.running) == ("app", "localhost/app:1", True)
    assert o.command == ["sh", "-c", "sleep 1000"] and o.entrypoint is None
    assert o.env == {"GREETING": "hi"}  # podman's own and the image's left out
    assert o.workdir == "/etc" and o.user is None
    assert o.labels == {"tier": "db", ADOPTED_LABEL: "podman:2a48e2e304ab"}
    assert o.health is not None and o.health.test == ["CMD-SHELL", "test -f /etc/ok"]
    assert (o.health.interval, o.health.timeout, o.health.retries) == (5.0, 30.0, 3)
    assert (o.restart.name, o.restart.max_retries) == ("on-failure", 3)
    assert o.network is None and o.memory == 64 << 20
    assert [(x.host_ip, x.host_port, x.container_port, x.proto) for x in o.ports] == \
        [("127.0.0.1", 8080, 80, "tcp")]
    kinds = [(m.kind, m.source, m.target, m.readonly) for m in o.mounts]
    assert kinds == [("volume", "data", "/etc", False), ("bind", "/srv/conf", "/conf", True),
                     ("volume", "app_var_lib_db", "/var/lib/db", False),
                     ("tmpfs", "tmpfs", "/scratch", False)]
    assert [(v.name, v.source) for v in p.volumes] == [("data", "/v/data/_data"),
                                                       ("app_var_lib_db", "/v/anon/_data")]


def test_plan_leaves_image_defaults_to_the_image() -> None:
    cfg = dict(_inspect()["Config"], Cmd=["/bin/sh"], WorkingDir="/", Healthcheck=None)
    p = plan("podman", _inspect(Config=cfg), IMAGE_CONFIG, new_name="app2")
    assert p.options.command is None and p.options.workdir is None
    assert p.options.health is None and p.options.name == "app2"


def test_plan_maps_restart_and_network_modes() -> None:
    host = dict(_inspect()["HostConfig"], RestartPolicy={"Name": "unless-stopped"},
                NetworkMode="none", PortBindings={})
    p = plan("podman", _inspect(HostConfig=host), IMAGE_CONFIG)
    assert p.options.restart.name == "always" and p.options.network == "none"
    assert any("unless-stopped" in w for w in p.warnings)


@pytest.mark.parametrize("ref", ["app", "lxc:app", "podman:", "podman:-x", "docker: a"])
def test_bad_source_is_refused(ref: str) -> None:
    with pytest.raises(BadInput):
        parse_source(ref)


def test_bad_name_is_refused() -> None:
    from volmerge.runtime.errors import BadInput as RuntimeBadInput

    with pytest.raises(RuntimeBadInput):
        plan("podman", _inspect(), IMAGE_CONFIG, new_name="bad name")


# -- real podman -------------------------------------------------------------------

@pytest.fixture
def podman_app(podman, fixture_image):  # type: ignore[no-untyped-def]
    """A podman container ``app`` running busybox with the named volume ``data``
    on /etc (seeded by podman from the image), into which it wrote and from which
    it deleted."""
    podman("load", "-i", str(fixture_image("busybox")))
    podman("volume", "create", "data")
    podman.run("-d", "--name", "app", "-e", "GREETING=hi", "-l", "tier=db", "-v", "data:/etc",
               "-w", "/etc", "--health-cmd", "test -f /etc/ok", "--restart", "on-failure:3",
               IMAGE, "sh", "-c", "echo hello > /etc/motd; rm /etc/group; touch /etc/ok;"
               " exec sleep 1000", rm=False)
    deadline = time.monotonic() + 30
    while "ok" not in podman("exec", "app", "ls", "/etc", check=False).stdout:
        assert time.monotonic() < deadline, "the podman container did not write its data"
        time.sleep(0.1)
    return podman


def _state(podman) -> str:  # type: ignore[no-untyped-def]
    return json.loads(podman("container", "inspect", "app").stdout)[0]["State"]["Status"]


def test_adopt_a_running_podman_container_with_its_data(podman_app, cli) -> None:  # type: ignore[no-untyped-def]
    env = podman_app.env
    r = cli("adopt", "podman:app", env=env)
    assert r.returncode == 0, r.stderr
    assert "adopted podman container app" in r.stdout
    try:
        assert _state(podman_app) in ("exited", "stopped")  # stopped, not removed
        info = json.loads(cli("inspect", "app", "--json").stdout)
        info = info[0] if isinstance(info, list) else info
        text = json.dumps(info)
        assert "GREETING" in text and "tier" in text and "test -f /etc/ok" in text
        # the data is podman's: written and deleted files as the container left them
        out = cli("exec", "app", "sh", "-c", "cat /etc/motd; ls /etc")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("hello\n") and "ok" in out.stdout.split()
        assert "group" not in out.stdout.split() and "passwd" in out.stdout.split()
        # the seed is the image's /etc: the volume's own diff shows what podman's run changed
        diff = cli("volume", "diff", "data", "--from", "seed", "--json")
        assert diff.returncode == 0, diff.stderr
        changes = {(c["path"].lstrip("/"), c["kind"]) for c in json.loads(diff.stdout)}
        assert {("motd", "added"), ("ok", "added"), ("group", "deleted")} <= changes
        assert not any(p == "passwd" for p, _ in changes)
    finally:
        cli("rm", "-f", "app")


def test_adopt_dry_run_changes_nothing(podman_app, cli, root) -> None:  # type: ignore[no-untyped-def]
    r = cli("adopt", "podman:app", "--dry-run", "--json", env=podman_app.env)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["dry_run"] and p["name"] == "app" and p["volumes"][0]["name"] == "data"
    assert _state(podman_app) == "running"
    assert json.loads(cli("ps", "-a", "--json").stdout) == []
    assert json.loads(cli("volume", "ls", "--json").stdout) == []


def test_adopt_refuses_a_taken_volume_name_and_changes_nothing(podman_app, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("volume", "create", "data").returncode == 0
    r = cli("adopt", "podman:app", env=podman_app.env)
    assert r.returncode == 2 and "volume named 'data' exists" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _state(podman_app) == "running"
    assert json.loads(cli("ps", "-a", "--json").stdout) == []


def test_adopt_unknown_container_is_bad_input(podman, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("adopt", "podman:nosuch", env=podman.env)
    assert r.returncode == 2 and "no such podman container: nosuch" in r.stderr
