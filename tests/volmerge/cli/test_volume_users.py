"""A stopped container's volume is its data: ``volume rm`` refuses it (exit 2,
nothing removed) and ``volume prune`` keeps it, as docker and podman do;
once the container is removed, both remove it."""

from __future__ import annotations

IMG = "localhost/volmerge-fixture/busybox:latest"


def test_a_stopped_containers_volume_is_kept(cli, fixture_image) -> None:  # type: ignore[no-untyped-def]
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    p = cli("run", "--network", "none", "--name", "web", "-v", "data:/data", IMG,
            "sh", "-c", "echo precious > /data/f")
    assert p.returncode == 0, p.stderr
    assert cli("volume", "create", "spare").returncode == 0

    p = cli("volume", "rm", "spare", "data")
    assert p.returncode == 2, p.stderr
    assert p.stderr == ("volmerge: error: volume 'data' is in use by container web (exited): "
                        "remove the container first (volmerge rm), or use --force\n")
    assert cli("volume", "ls", "-q").stdout.split() == ["data", "spare"]  # nothing removed

    p = cli("volume", "prune")
    assert p.returncode == 0 and p.stdout.split() == ["spare"], p.stderr
    p = cli("run", "--rm", "--network", "none", "-v", "data:/data", IMG, "cat", "/data/f")
    assert p.stdout == "precious\n", p.stderr

    assert cli("rm", "web").returncode == 0
    p = cli("volume", "prune")
    assert p.returncode == 0 and p.stdout.split() == ["data"], p.stderr


def test_force_removes_a_stopped_containers_volume(cli, fixture_image) -> None:  # type: ignore[no-untyped-def]
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    assert cli("run", "--network", "none", "--name", "web", "-v", "data:/data", IMG,
               "true").returncode == 0
    p = cli("volume", "rm", "-f", "data")
    assert p.returncode == 0 and p.stdout == "data\n", p.stderr


def test_force_never_pulls_a_running_containers_volume(cli, fixture_image) -> None:  # type: ignore[no-untyped-def]
    """``-f`` removed the volume under a running container: its mount went
    empty and a restart made a new, empty volume of the same name."""
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    assert cli("run", "-d", "--network", "none", "--name", "web", "-v", "data:/data", IMG,
               "sh", "-c", "echo precious > /data/f; exec sleep 300").returncode == 0
    try:
        for argv in (["volume", "rm", "-f", "data"], ["volume", "rm", "data"]):
            p = cli(*argv)
            assert p.returncode == 2, p.stderr
            assert p.stderr == ("volmerge: error: volume 'data' is mounted by running "
                                "container web: stop it first (volmerge stop)\n")
        assert cli("exec", "web", "cat", "/data/f").stdout == "precious\n"
        assert cli("volume", "ls", "-q").stdout.split() == ["data"]
    finally:
        cli("rm", "-f", "web")


def test_inspect_names_its_users(cli, fixture_image) -> None:  # type: ignore[no-untyped-def]
    """The text output listed each user by its 64-character container id."""
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    assert cli("run", "-d", "--network", "none", "--name", "web", "-v", "data:/data", IMG,
               "sleep", "300").returncode == 0
    try:
        out = cli("volume", "inspect", "data").stdout.splitlines()
        assert "Users:      web (rw)" in out, out
    finally:
        cli("rm", "-f", "web")
