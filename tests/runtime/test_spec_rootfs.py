"""The OCI spec from image config + options, option parsing, and the overlay
root with more layers than the kernel takes in one mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volmerge.runtime import rootfs, spec
from volmerge.runtime import sys as rsys
from volmerge.runtime.errors import BadInput
from volmerge.runtime.options import (
    HealthConfig,
    Mount,
    PortSpec,
    RestartPolicy,
    RunOptions,
    parse_port,
    parse_restart,
    parse_tmpfs,
    parse_volume,
)

IMG = {"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo image"],
                  "Env": ["PATH=/bin", "MODE=image"], "WorkingDir": "/srv", "User": "app"}}


def test_image_defaults_apply_at_spec_time(busybox_rootfs):
    p = spec.resolve_process(busybox_rootfs, IMG, RunOptions(image="x"), "h")
    assert p.args == ["/bin/sh", "-c", "echo image"]
    assert "MODE=image" in p.env and "HOSTNAME=h" in p.env and "HOME=/home/app" in p.env
    assert (p.cwd, p.uid, p.gid, p.additional_gids) == ("/srv", 1000, 1000, [2000])
    # operator overrides win; --entrypoint drops the image's Cmd
    o = RunOptions(image="x", command=["echo hi"], env={"MODE": "op"}, user="nobody",
                   workdir="/tmp")
    p = spec.resolve_process(busybox_rootfs, IMG, o, "h")
    assert p.args == ["/bin/sh", "-c", "echo hi"] and "MODE=op" in p.env
    assert (p.cwd, p.uid, p.gid) == ("/tmp", 65534, 65534)
    p = spec.resolve_process(busybox_rootfs, IMG, RunOptions(image="x", entrypoint=["/bin/true"]), "h")
    assert p.args == ["/bin/true"]
    # an upgrade replaces the image and keeps only what the operator said
    new = o.replace(image="y")
    p = spec.resolve_process(busybox_rootfs, {"config": {"Cmd": ["/bin/true"]}},
                             new.replace(command=None), "h")
    assert p.args == ["/bin/true"] and "MODE=op" in p.env


def test_user_forms(busybox_rootfs):
    assert spec.resolve_user(busybox_rootfs, "")[:2] == (0, 0)
    assert spec.resolve_user(busybox_rootfs, "1000")[:2] == (1000, 1000)
    assert spec.resolve_user(busybox_rootfs, "app:root")[:2] == (1000, 0)
    assert spec.resolve_user(busybox_rootfs, "4242:4343")[:2] == (4242, 4343)
    with pytest.raises(BadInput):
        spec.resolve_user(busybox_rootfs, "ghost")
    with pytest.raises(BadInput):
        spec.resolve_user(busybox_rootfs, "app:ghosts")


def test_build_spec_shape(busybox_rootfs):
    p = spec.resolve_process(busybox_rootfs, IMG, RunOptions(image="x"), "h")
    s = spec.build_spec(p, hostname="h", mounts=[spec.ResolvedMount("bind", "/srv", "/data", True)],
                        netns=None, share_host_net=False, cgroups_path="/volmerge/abc",
                        memory=1 << 20, pids_limit=10)
    assert s["process"]["capabilities"]["bounding"] == spec.DEFAULT_CAPS
    assert s["process"]["capabilities"]["effective"] == []  # non-root user
    assert s["process"]["noNewPrivileges"] is True
    assert {n["type"] for n in s["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert s["linux"]["resources"]["memory"] == {"limit": 1 << 20}
    assert s["linux"]["resources"]["pids"] == {"limit": 10}
    dests = [m["destination"] for m in s["mounts"]]
    assert dests[:6] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert s["mounts"][-1] == {"destination": "/data", "type": "bind", "source": "/srv",
                               "options": ["rbind", "rprivate", "ro"]}
    host = spec.build_spec(p, hostname="h", mounts=[], netns=None, share_host_net=True,
                           cgroups_path="/x")
    assert "network" not in {n["type"] for n in host["linux"]["namespaces"]}
    joined = spec.build_spec(p, hostname="h", mounts=[], netns="/run/netns/a",
                             share_host_net=False, cgroups_path="/x")
    assert {"type": "network", "path": "/run/netns/a"} in joined["linux"]["namespaces"]


def test_resolve_in_root(tmp_path):
    (tmp_path / "etc").mkdir()
    os.symlink("/etc", tmp_path / "abs")
    os.symlink("../etc", tmp_path / "etc" / "rel")
    os.symlink("../../../..", tmp_path / "up")
    assert spec.resolve_in_root(tmp_path, "/abs/x") == "/etc/x"
    assert spec.resolve_in_root(tmp_path, "/etc/rel/x") == "/etc/x"
    with pytest.raises(BadInput, match="escapes"):
        spec.resolve_in_root(tmp_path, "/up/etc")


def test_option_parsers():
    assert parse_port("8080:80") == PortSpec(8080, 80)
    assert parse_port("127.0.0.1:53:53/udp") == PortSpec(53, 53, "udp", "127.0.0.1")
    assert parse_restart("on-failure:3") == RestartPolicy("on-failure", 3)
    assert parse_restart("always") == RestartPolicy("always")
    assert parse_volume("db:/var/lib/db:ro") == Mount("volume", "/var/lib/db", "db", True)
    assert parse_tmpfs("/run:size=1m,mode=755") == Mount("tmpfs", "/run", "tmpfs", False,
                                                         ["size=1m", "mode=755"])


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=50, deadline=None)
@given(name=st.none() | st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
       cmd=st.none() | st.lists(_text, max_size=3), env=st.dictionaries(_text, _text, max_size=3),
       health=st.none() | st.builds(HealthConfig, test=st.lists(_text, max_size=2),
                                    retries=st.integers(0, 9)),
       restart=st.builds(RestartPolicy, st.sampled_from(["no", "always", "on-failure"]),
                         st.integers(0, 5)))
def test_run_options_json_roundtrip(name, cmd, env, health, restart):
    import json

    o = RunOptions(image="img", name=name, command=cmd, env=env, health=health, restart=restart,
                   mounts=[Mount("volume", "/data", "v")], ports=[PortSpec(1, 2)])
    assert RunOptions.from_json(json.loads(json.dumps(o.to_json()))) == o


def _layers(base: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        d = base / f"{i}"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        if i == 0:
            (d / "shadowed").write_text("top")
        out.append(str(d))
    # layer n-1 is the bottom: it also has "shadowed" and a file the top deletes
    (base / f"{n - 1}" / "shadowed").write_text("bottom")
    (base / f"{n - 1}" / "gone").write_text("x")
    os.mknod(base / "0" / "gone", 0o600 | 0o020000, 0)  # whiteout in the top layer
    return out  # top-most first


@pytest.mark.slow
def test_more_layers_than_the_kernel_takes(tmp_path):
    n = rsys.overlay_max_lowers() + 20
    lowers = _layers(tmp_path / "layers", n)
    cdir = tmp_path / "c"
    with pytest.raises(OSError):
        target = tmp_path / "direct"
        target.mkdir()
        rsys.mount_overlay(target, lowers, readonly=True)
    mp = rootfs.mount_rootfs(cdir, lowers)
    try:
        assert (mp / "f0").read_text() == "0" and (mp / f"f{n - 1}").read_text() == str(n - 1)
        assert (mp / "shadowed").read_text() == "top"
        assert not (mp / "gone").exists()
        (mp / "new").write_text("upper")
    finally:
        rootfs.umount_rootfs(cdir)
    assert (cdir / "upper" / "new").read_text() == "upper"
    assert (cdir / "squashed").is_dir()
    assert not any(p.name.startswith("squash-") for p in cdir.iterdir())
