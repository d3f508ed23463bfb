"""No local user gets root, or secrets, through the store (issue 14, point 2).

Every test plays a real unprivileged local user (``unprivileged_user``) against
a store in a directory that user can reach (``public_dir``): first showing it
does reach a file beside the store, so that "cannot reach" proves something.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys

from ..conftest import _remove_networks
from .conftest import BUSYBOX_REF, EXECUTORS
from .images.builders import E, image_files, layer_tar, write_tar


@pytest.fixture
def root(public_dir: Path) -> Path:
    """The test's store root, where any local user could otherwise reach it."""
    r = public_dir / "root"
    yield r
    if (r / "state.db").exists():
        from volmerge.runtime.containers import Engine
        from volmerge.runtime.store import Store

        st = Store(r, sweep=False)
        try:
            eng = Engine(st)
            for c in eng.list(all=True):
                eng.remove(c.id, force=True)
        finally:
            st.close()
    _remove_networks(r)
    rsys.umount_tree(r)


def _volmerge(root: Path, *args: str, umask: int = -1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "volmerge", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, VOLMERGE_ROOT=str(root)),
                          umask=umask)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _shows_user_can_reach(public_dir: Path, user) -> None:  # type: ignore[no-untyped-def]
    probe = public_dir / "probe"
    probe.write_text("reachable\n")
    os.chmod(probe, 0o644)
    p = user.run("cat", probe)
    assert p.stdout == "reachable\n", p.stderr


def _suid_image(tmp_path: Path) -> Path:
    """An oci-archive whose layer ships a setuid-root copy of cat."""
    cat = Path(shutil.which("cat") or "/bin/cat").read_bytes()
    layer = layer_tar([E("bin", "dir", mode=0o755), E("bin/suidcat", data=cat, mode=0o4755)])
    return write_tar(image_files([layer], ref="localhost/suid:1"), tmp_path / "suid.tar")


def test_user_cannot_run_setuid_binaries_or_read_secrets_in_the_store(
        public_dir, root, tmp_path, fixture_image, unprivileged_user):
    user = unprivileged_user
    _shows_user_can_reach(public_dir, user)
    assert _volmerge(root, "image", "load", str(_suid_image(tmp_path))).returncode == 0
    assert _volmerge(root, "image", "load", str(fixture_image("busybox"))).returncode == 0
    # root in a container writes a setuid binary into a volume; -e carries a secret
    p = _volmerge(root, "run", "--name", "db", "-e", "DB_PASSWORD=hunter2", "-v", "vol:/data",
                  BUSYBOX_REF, "/bin/sh", "-c", "cp /bin/busybox /data/sb && chmod 4755 /data/sb")
    assert p.returncode == 0, p.stderr

    [suidcat] = root.glob("layers/*/diff/bin/suidcat")
    assert os.stat(suidcat).st_mode & stat.S_ISUID and os.stat(suidcat).st_uid == 0
    in_volume = [Path(d) / "sb" for d, _, files in os.walk(root / "volumes") if "sb" in files]
    assert in_volume and all(os.stat(f).st_mode & stat.S_ISUID for f in in_volume)
    state_db = root / "state.db"
    assert b"hunter2" in b"".join(f.read_bytes() for f in root.glob("state.db*"))

    for f in [suidcat, *in_volume]:
        p = user.run(f, "/etc/shadow")
        assert p.returncode != 0 and "root:" not in p.stdout, (f, p.stdout)
        assert "Permission denied" in p.stderr, p.stderr
    for f in [*root.glob("state.db*"), root / "containers"]:
        p = user.run("grep", "-a", "-r", "DB_PASSWORD", f)
        assert p.returncode == 2 and "hunter2" not in p.stdout, (f, p.stdout)
        assert "Permission denied" in p.stderr
    assert _mode(root) == 0o700 and _mode(state_db) == 0o600


@pytest.mark.parametrize("umask", [0o000, 0o077])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_the_callers_umask_changes_nothing(public_dir, root, fixture_image, executor, umask):
    """umask 000 once made every store directory 0777; 077 made a container's
    root 0700 (a -u 1000 process could not even list /)."""
    assert _volmerge(root, "image", "load", str(fixture_image("busybox")),
                     umask=umask).returncode == 0
    p = _volmerge(root, "run", "-d", "--name", "c", "--runtime", executor, "-u", "1000",
                  "-v", "vol:/data", BUSYBOX_REF, "/bin/sh", "-c",
                  "umask; stat -c %a /etc/hosts /etc/hostname /etc/resolv.conf / /data; "
                  "ls / >/dev/null && echo listed; sleep 60", umask=umask)
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    # a container's own processes get 0022 as under docker and podman, not the caller's umask
    e = _volmerge(root, "exec", "-u", "0", "c", "/bin/sh", "-c",
                  "umask; touch /tmp/e; stat -c %a /tmp/e", umask=umask)
    assert e.stdout.split() == ["0022", "644"], e.stderr
    assert _volmerge(root, "stop", "-t", "1", "c", umask=umask).returncode == 0
    logs = _volmerge(root, "logs", "c").stdout.split()
    assert logs == ["0022", "644", "644", "644", "755", "755", "listed"], logs

    assert _mode(root) == 0o700
    for entry in os.scandir(root):
        want = 0o700 if entry.is_dir(follow_symlinks=False) else 0o600
        assert _mode(Path(entry.path)) == want, entry.path
    for sub in ("blobs/sha256", "locks", "containers/" + cid):
        assert _mode(root / sub) == 0o700, sub
    for f in (root / "locks").iterdir():
        assert _mode(f) == 0o600, f
    assert _mode(root / "containers" / cid / "bundle" / "config.json") == 0o600


def test_a_store_root_others_could_change_is_refused(public_dir, unprivileged_user):
    user = unprivileged_user
    theirs = public_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, user.uid, user.gid)
    p = _volmerge(theirs, "ps")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert str(theirs) in p.stderr and user.name in p.stderr and "chown" in p.stderr
    assert os.listdir(theirs) == []

    open_to_all = public_dir / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    p = _volmerge(open_to_all, "ps")
    assert p.returncode == 2 and "writable by group or others" in p.stderr, p.stderr
    assert os.listdir(open_to_all) == [] and _mode(open_to_all) == 0o777

    # below a directory the user owns (it could rename the store away and put its own there)
    p = _volmerge(theirs / "root", "ps")
    assert p.returncode == 2 and user.name in p.stderr, p.stderr
    assert os.listdir(theirs) == []

    # through a symlink the user planted (to a root-owned directory)
    target = public_dir / "target"
    target.mkdir(mode=0o700)
    link = public_dir / "link"
    link.symlink_to(target)
    os.lchown(link, user.uid, user.gid)
    p = _volmerge(link, "ps")
    assert p.returncode == 2 and "symlink" in p.stderr and user.name in p.stderr, p.stderr
    assert os.listdir(target) == []
    # ... while root's own symlink to a store is followed (as docker's data-root)
    os.lchown(link, 0, 0)
    assert _volmerge(link, "ps").returncode == 0
    assert (target / "state.db").exists()


def test_planted_lock_and_state_files_are_refused(public_dir, root, unprivileged_user):
    user = unprivileged_user
    assert _volmerge(root, "ps").returncode == 0
    elsewhere = public_dir / "elsewhere"
    elsewhere.write_text("")
    lock = root / "locks" / "sweep.lock"
    for plant in ("symlink", "theirs", "dangling"):
        lock.unlink(missing_ok=True)
        if plant == "symlink":
            lock.symlink_to(elsewhere)
        elif plant == "dangling":
            lock.symlink_to(public_dir / "nothing")
        else:
            lock.write_text("")
            os.chown(lock, user.uid, user.gid)
        p = _volmerge(root, "ps")
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, (plant, p.stderr)
        assert str(lock) in p.stderr, p.stderr
    assert not (public_dir / "nothing").exists()
    lock.unlink()

    # the lock directory itself: a symlink to a directory the user owns, or the user's
    theirs = public_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, user.uid, user.gid)
    shutil.rmtree(root / "locks")
    (root / "locks").symlink_to(theirs)
    p = _volmerge(root, "ps")
    assert p.returncode == 2 and "symlink" in p.stderr, p.stderr
    assert os.listdir(theirs) == []
    (root / "locks").unlink()
    (root / "locks").mkdir()
    os.chown(root / "locks", user.uid, user.gid)
    p = _volmerge(root, "ps")
    assert p.returncode == 2 and user.name in p.stderr, p.stderr
    os.chown(root / "locks", 0, 0)
    assert _volmerge(root, "ps").returncode == 0

    # state.db (or its WAL) as a link planted in the root
    wal = root / "state.db-wal"
    wal.unlink(missing_ok=True)
    wal.symlink_to(elsewhere)
    p = _volmerge(root, "ps")
    assert p.returncode == 2 and "state.db-wal" in p.stderr, p.stderr
    assert elsewhere.read_text() == ""
    wal.unlink()
    assert _volmerge(root, "ps").returncode == 0


def test_a_store_made_by_an_older_version_is_tightened_on_open(public_dir, root,
                                                                unprivileged_user):
    user = unprivileged_user
    _shows_user_can_reach(public_dir, user)
    assert _volmerge(root, "ps").returncode == 0
    # as volmerge made it before: root 0711, directories 0755, state.db 0644
    os.chmod(root, 0o711)
    for d, dirs, files in os.walk(root):
        for n in dirs:
            os.chmod(Path(d) / n, 0o755)
        for n in files:
            os.chmod(Path(d) / n, 0o644)
    (root / "layers" / "probe").write_text("old\n")
    os.chmod(root / "layers" / "probe", 0o644)
    assert user.run("cat", root / "layers" / "probe").stdout == "old\n"  # the hole

    assert _volmerge(root, "ps").returncode == 0
    p = user.run("cat", root / "layers" / "probe")
    assert p.returncode != 0 and "Permission denied" in p.stderr
    assert _mode(root) == 0o700 and _mode(root / "state.db") == 0o600
    for sub in ("blobs", "blobs/sha256", "layers", "l", "containers", "volumes", "locks", "tmp"):
        assert _mode(root / sub) == 0o700, sub
