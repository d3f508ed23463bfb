"""Bad input: one line on stderr, exit 2, nothing left behind (issue 3 item 6)."""

from __future__ import annotations

import os

import pytest


def _nothing_left(cli, root):
    import sqlite3

    if (root / "state.db").exists():
        with sqlite3.connect(root / "state.db") as db:
            assert db.execute("SELECT count(*) FROM containers").fetchone()[0] == 0
    assert not (root / "containers").exists() or os.listdir(root / "containers") == []


@pytest.fixture
def image(busybox_rootfs) -> str:
    """Bad input needs no image store: a rootfs directory is an image too."""
    return str(busybox_rootfs)


def _one_line_error(p, needle: str):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith("volmerge: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert needle in p.stderr


def test_unknown_image(cli, root, store):
    from volmerge.runtime.images import ImageStore

    ImageStore(store)  # an empty image store
    _one_line_error(cli("run", "--rm", "no/such:image", "true"), "no such image")
    _nothing_left(cli, root)


def test_duplicate_name(cli, image, root):
    assert cli("create", "--name", "db", image, "true").returncode == 0
    _one_line_error(cli("run", "--name", "db", image, "true"), "already in use")
    assert cli("rm", "db").returncode == 0
    _nothing_left(cli, root)


@pytest.mark.parametrize("spec,needle", [
    ("/no/such/dir:/data", "does not exist"),
    ("data", "expected SOURCE:/PATH"),
    ("vol:relative", "must be absolute"),
    ("vol:/data:rx", "mode must be ro or rw"),
    ("bad name!:/data", "invalid volume name"),
    ("vol:/a/../b", "must not contain"),
])
def test_bad_mount_spec(cli, image, root, spec, needle):
    _one_line_error(cli("run", "--rm", "-v", spec, image, "true"), needle)
    _nothing_left(cli, root)


def test_missing_command_in_image(cli, image, root, executor):
    _one_line_error(cli("run", "--rm", "--runtime", executor, image, "/no/such/cmd"), "not found")
    _nothing_left(cli, root)
    _one_line_error(cli("run", "-d", "--runtime", executor, image, "nosuchcmd"), "not found")
    _nothing_left(cli, root)


def test_image_without_command(cli, make_image, root):
    img = make_image({"config": {}}, "nocmd")
    _one_line_error(cli("run", "--rm", img), "no command specified")
    _nothing_left(cli, root)


def test_mount_target_escaping_through_symlink(cli, make_image, root, tmp_path):
    img = make_image({"config": {"Cmd": ["/bin/true"]}}, "escape",
                     {"var/evil": "->../../../../../../../tmp"})
    host = tmp_path / "hostdir"
    host.mkdir()
    _one_line_error(cli("run", "--rm", "-v", f"{host}:/var/evil/x", img), "escapes")
    _one_line_error(cli("run", "--rm", "-v", "vol:/var/evil/x", img), "escapes")
    _one_line_error(cli("run", "--rm", "--tmpfs", "/var/evil", img), "escapes")
    _nothing_left(cli, root)
    assert not (root / "volumes" / "vol").exists()


@pytest.mark.parametrize("args,needle", [
    (["--restart", "sometimes"], "bad restart policy"),
    (["--runtime", "crun"], "unknown runtime"),
    (["-p", "80:99999"], "out of range"),
    (["--name", "bad/name"], "invalid container name"),
    (["--rm", "--restart", "always"], "cannot be combined"),
    (["--network", "backend"], "does not exist"),
    (["-u", "nosuchuser"], "not found in the image"),
    (["--health-interval", "soon", "--health-cmd", "true"], "bad duration"),
    (["-m", "lots"], "bad size"),
])
def test_bad_options(cli, image, root, args, needle):
    _one_line_error(cli("run", "--rm", *args, image, "true"), needle)
    _nothing_left(cli, root)


def test_unknown_container(cli, root):
    for verb in ("stop", "start", "rm", "logs", "inspect", "kill", "wait", "pause"):
        _one_line_error(cli(verb, "nosuch"), "no such container")
    _one_line_error(cli("exec", "nosuch", "true"), "no such container")


def test_bad_env_file(cli, image, root, tmp_path):
    _one_line_error(cli("run", "--rm", "--env-file", str(tmp_path / "missing.env"), image, "true"),
                    "missing.env")
    bad = tmp_path / "bad.env"
    bad.write_text("OK=1\nBAD KEY=2\n")
    _one_line_error(cli("run", "--rm", "--env-file", str(bad), image, "true"), "line 2")
    _nothing_left(cli, root)


def test_tty_needs_a_terminal_and_the_foreground(cli, image, root):
    _one_line_error(cli("run", "-t", "--rm", image, "true", input=""), "not a TTY")
    _one_line_error(cli("run", "-d", "-t", image, "true", input=""), "-d with -t")
    assert not (root / "containers").exists() or os.listdir(root / "containers") == []


def test_bad_dns(cli, image, root):
    _one_line_error(cli("run", "--rm", "--dns", "not-an-ip", image, "true"), "--dns")
    _nothing_left(cli, root)


def test_image_user_beyond_the_id_range(cli, make_image, root):
    """A hostile image's User (or /etc/passwd) names an id runc cannot take:
    refused as bad input before runc, not a runc failure (exit 1)."""
    img = make_image({"config": {"Cmd": ["/bin/true"], "User": "99999999999"}}, "bigid")
    _one_line_error(cli("run", "--rm", img), "beyond")
    img = make_image({"config": {"Cmd": ["/bin/true"], "User": "huge"}}, "bigpasswd",
                     {"etc/passwd": "root:x:0:0::/root:/bin/sh\nhuge:x:4294967295:0::/:/bin/sh\n"})
    _one_line_error(cli("run", "--rm", img), "beyond")
    _nothing_left(cli, root)
