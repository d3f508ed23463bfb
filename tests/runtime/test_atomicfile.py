"""runtime.atomicfile: the one way to replace a file (no root needed)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from volmerge.runtime.atomicfile import AtomicFile, FileLocked, atomic_write

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def test_success_replaces_and_leaves_no_lock(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")
    atomic_write(p, "new", 0o640)
    assert p.read_text() == "new"
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_exception_aborts_old_file_kept_no_lock(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), AtomicFile(p) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_mode_ignores_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "f", b"x", 0o644)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f").st_mode & 0o777 == 0o644


def test_stale_lock_of_a_dead_writer_is_broken(tmp_path):
    """A writer killed mid-write leaves NAME.lock; nobody holds its flock,
    so the next write removes it and goes on (the documented way)."""
    p = tmp_path / "f"
    p.write_text("old")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            f = AtomicFile(p).__enter__()
            f.write(b"torn")
        finally:
            os._exit(0)  # dies holding the lock: no commit, no abort
    os.waitpid(pid, 0)
    assert (tmp_path / "f.lock").exists()
    assert p.read_text() == "old"
    atomic_write(p, "new")
    assert p.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_plain_leftover_lock_file_is_broken(tmp_path):
    (tmp_path / "f.lock").write_text("left by an older volmerge")
    atomic_write(tmp_path / "f", "new")
    assert (tmp_path / "f").read_text() == "new"
    assert not (tmp_path / "f.lock").exists()


def test_live_writer_is_not_broken(tmp_path):
    p = tmp_path / "f"
    with AtomicFile(p) as f:
        f.write(b"first")
        with pytest.raises(FileLocked) as exc:
            atomic_write(p, "second")
        assert exc.value.exit_code == 1
    assert p.read_text() == "first"


def test_concurrent_writers_wait_their_turn(tmp_path):
    """Writers with ``wait`` never tear the file nor lose the lock: each
    write lands whole, one after the other."""
    p = tmp_path / "f"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                with AtomicFile(p, wait=10) as f:
                    f.write(f"{n}:{i}:" + "x" * 4096)
                    time.sleep(0.0005)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = p.read_text()
    assert text.endswith("x" * 4096) and len(text.split(":")) == 3
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_private_uses_a_random_name_and_ignores_a_planted_lock(tmp_path):
    (tmp_path / "out.lock").symlink_to("/etc/passwd")
    with AtomicFile(tmp_path / "out", None, private=True) as f:
        f.write(b"data")
    assert (tmp_path / "out").read_bytes() == b"data"
    assert os.readlink(tmp_path / "out.lock") == "/etc/passwd"


def test_symlinked_lock_is_refused(tmp_path):
    from volmerge.runtime.errors import BadInput

    (tmp_path / "f.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BadInput):
        atomic_write(tmp_path / "f", "x")
    assert not (tmp_path / "elsewhere").exists()
