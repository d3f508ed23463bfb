"""Bind mounts, tmpfs, named volumes (through the VolumeProvider interface),
and the record of mounts that lets a successor take a container's place."""

from __future__ import annotations

import os

from volmerge.runtime.executors.base import Stdio
from volmerge.runtime.options import RunOptions, parse_tmpfs, parse_volume


def _run(engine, tmp_path, opts: RunOptions) -> tuple[int, str]:
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        c = engine.create(opts)
        # a foreground run (what start(attach=True) does), output to a file
        from volmerge.runtime.supervisor import supervise

        engine.records.update(c.id, stop_requested=False)
        engine.prepare(engine.records.lookup(c.id))
        saved = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            code = supervise(engine.records, engine.bundles, c.id, foreground=True)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        engine.remove(c.id)
    return code, out.read_text()


def test_bind_tmpfs_and_volume(engine, busybox_rootfs, tmp_path, store):
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = ("cat /h/in.txt; echo written > /h/out.txt; "
              "touch /ro/x 2>/dev/null && echo ro-writable || echo ro-readonly; "
              "grep ' /t ' /proc/mounts | cut -d' ' -f3; "
              "cat /data/seed.txt; echo more >> /data/seed.txt")
    opts = RunOptions(image=str(busybox_rootfs), command=["/bin/sh", "-c", script],
                      mounts=[parse_volume(f"{host}:/h"), parse_volume(f"{ro}:/ro:ro"),
                              parse_tmpfs("/t:size=1m"), parse_volume("appdata:/data")])
    code, out = _run(engine, tmp_path, opts)
    assert code == 0, out
    assert out.splitlines() == ["from host", "ro-readonly", "tmpfs", "from the image"]
    assert (host / "out.txt").read_text() == "written\n"
    assert not (ro / "x").exists()
    # the named volume was seeded from the image and keeps its data
    vol = store.root / "volumes" / "appdata" / "_data"
    assert (vol / "seed.txt").read_text() == "from the image\nmore\n"
    code, out = _run(engine, tmp_path, opts.replace(
        command=["/bin/cat", "/data/seed.txt"]))
    assert out == "from the image\nmore\n"


def test_mounts_recorded_for_successor(engine, busybox_rootfs, make_image, tmp_path):
    opts = RunOptions(image=str(busybox_rootfs), name="app",
                      command=["/bin/sh", "-c", "while true; do sleep 0.05; done"],
                      mounts=[parse_volume("appdata:/data"), parse_tmpfs("/scratch")],
                      env={"MODE": "prod"})
    c = engine.create(opts)
    engine.start(c.id)
    c = engine.get("app")
    assert [(m["kind"], m["target"], m["name"]) for m in c.mounts] == [
        ("volume", "/data", "appdata"), ("tmpfs", "/scratch", "")]
    engine.stop("app", timeout=0.2)
    engine.remove("app")
    # the successor: same options, new image; the image's defaults apply anew
    v2 = make_image({"config": {"Cmd": ["/bin/sh", "-c", "cat /data/seed.txt; echo $MODE"],
                                "Env": ["MODE=image-default", "NEW=1"]}}, "v2")
    succ = c.options.replace(image=v2, command=None)
    code, out = _run(engine, tmp_path, succ)
    assert code == 0
    assert out.splitlines() == ["from the image", "prod"]


def test_volume_provider_attach_and_detach(store, executor, busybox_rootfs):
    from volmerge.runtime.containers import Engine

    calls = []

    class Recording:
        def attach(self, name, cid, seed, *, readonly=False, anonymous=False):
            calls.append(("attach", name, seed is not None and seed.name, readonly, anonymous))
            d = store.root / "volumes" / name
            d.mkdir(parents=True, exist_ok=True)
            return d

        def detach(self, name, cid):
            calls.append(("detach", name))

        def discard(self, name, cid):
            calls.append(("discard", name))

    eng = Engine(store, volumes=Recording(), runtime=executor)
    c = eng.create(RunOptions(image=str(busybox_rootfs), command=["/bin/sleep", "30"],
                              mounts=[parse_volume("v1:/data:ro"), parse_volume("v2:/fresh")]))
    eng.start(c.id)
    assert calls == [("attach", "v1", "data", True, False), ("attach", "v2", False, False, False)]
    eng.remove(c.id, force=True)
    assert calls[2:] == [("detach", "v1"), ("detach", "v2")]


def test_image_volumes_get_named_volumes(engine, make_image, tmp_path, store):
    img = make_image({"config": {"Cmd": ["/bin/sh", "-c", "echo x >> /data/seed.txt"],
                                 "Volumes": {"/data": {}}}}, "withvol")
    opts = RunOptions(image=img, name="db")
    assert _run(engine, tmp_path, opts)[0] == 0
    assert _run(engine, tmp_path, opts)[0] == 0
    vol = store.root / "volumes" / "db_data" / "_data" / "seed.txt"
    assert vol.read_text() == "from the image\nx\nx\n"


def test_container_layer_survives_stop_start(engine, busybox_rootfs):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=[
        "/bin/sh", "-c", "echo $$ >> /root/starts; while true; do sleep 0.05; done"]))
    engine.start(c.id)
    engine.stop(c.id, timeout=0.2)
    engine.start(c.id)
    engine.stop(c.id, timeout=0.2)
    c = engine.get(c.id)
    assert (c.upper / "root" / "starts").read_text().count("\n") == 2
    engine.remove(c.id)
    assert not c.dir.exists()


def test_exec_sees_limits_and_caps(engine, busybox_rootfs, tmp_path):
    c = engine.create(RunOptions(image=str(busybox_rootfs), command=["/bin/sleep", "30"],
                                 memory=64 << 20, pids_limit=50))
    engine.start(c.id)
    out = tmp_path / "exec.txt"
    with open(out, "wb") as f:
        code = engine.exec(c.id, ["/bin/sh", "-c", "grep CapBnd /proc/self/status; "
                                  "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; ls /dev"],
                           stdio=Stdio(0, f.fileno(), f.fileno()))
    assert code == 0
    text = out.read_text()
    assert "CapBnd:\t00000000a80425fb" in text
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm"):
        assert dev in text.split()
    from volmerge.runtime.cgroups import CGROUP_ROOT, PARENT

    assert (CGROUP_ROOT / "pids" / PARENT / c.id / "pids.max").read_text().strip() == "50"
    assert int((CGROUP_ROOT / "memory" / PARENT / c.id / "memory.limit_in_bytes")
               .read_text()) == 64 << 20
    engine.remove(c.id, force=True)


def test_hostname_hosts_and_resolv_conf(engine, busybox_rootfs, tmp_path):
    """/etc/hostname, /etc/hosts and /etc/resolv.conf, as Docker gives them."""
    opts = RunOptions(image=str(busybox_rootfs), hostname="web1",
                      command=["/bin/sh", "-c", "cat /etc/hostname; grep web1 /etc/hosts; "
                               "grep -c nameserver /etc/resolv.conf; echo nameserver 9.9.9.9 >> /etc/resolv.conf"])
    code, out = _run(engine, tmp_path, opts)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0] == "web1" and "web1" in lines[1] and int(lines[2]) >= 1


def test_special_files_follow_image_symlinks_inside_the_root(engine, make_image, tmp_path):
    """An image whose /etc/hosts, /etc/hostname and /etc/resolv.conf are
    (dangling, absolute or climbing) symlinks: the files land inside the
    container's root, never on the host."""
    outside = tmp_path / "outside"
    outside.mkdir()
    img = make_image({"config": {}}, f"special-links-{os.getpid()}", {
        "etc/hosts": f"->{outside}/hosts",
        "etc/hostname": f"->../../../../../../..{outside}/hostname",
        "etc/resolv.conf": "->/run/resolv.conf",
    })
    opts = RunOptions(image=img, hostname="linked",
                      command=["/bin/sh", "-c", "cat /etc/hostname; grep -c linked /etc/hosts; "
                               "grep -c nameserver /run/resolv.conf"])
    code, out = _run(engine, tmp_path, opts)
    assert code == 0, out
    assert out.splitlines()[:2] == ["linked", "1"]
    assert list(outside.iterdir()) == []


def test_container_resolv_conf_drops_loopback_servers():
    from volmerge.runtime.spec import container_resolv_conf

    host = "# generated\nsearch corp.example\nnameserver 127.0.0.53\nnameserver 10.1.2.3\noptions edns0\n"
    out = container_resolv_conf(host, None, share_host_net=False)
    assert "127.0.0.53" not in out and "nameserver 10.1.2.3" in out and "search corp.example" in out
    assert container_resolv_conf(host, None, share_host_net=True) == host
    # only a local stub: systemd-resolved's upstream list, else Docker's public fallback
    stub = "nameserver 127.0.0.53\nsearch lan\n"
    upstream = "nameserver 192.168.1.1\n"
    assert "nameserver 192.168.1.1" in container_resolv_conf(stub, upstream, share_host_net=False)
    fallback = container_resolv_conf(stub, None, share_host_net=False)
    assert "nameserver 8.8.8.8" in fallback and "search lan" in fallback
    assert "nameserver 8.8.8.8" in container_resolv_conf("", None, share_host_net=False)
    assert container_resolv_conf("nameserver ::1\nnameserver fd00::1\n", None,
                                 share_host_net=False) == "nameserver fd00::1\n"
