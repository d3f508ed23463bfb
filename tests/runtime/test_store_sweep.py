"""The store's sweep: crash leftovers go, another live process's work stays."""

from __future__ import annotations

import os
from pathlib import Path

from volmerge.runtime import incomplete
from volmerge.runtime.store import Store


def test_a_store_opened_meanwhile_leaves_live_tmpdirs_alone(root: Path) -> None:
    """Before the incomplete marker, opening the store swept every tmp/
    directory without a lock file, a live process's tmpdir() included."""
    s1 = Store(root)
    d = s1.tmpdir("preview-")
    (d / "work").write_text("in use")
    with s1.building("load-") as b:
        s2 = Store(root)  # sweeps on open
        assert (d / "work").read_text() == "in use"
        assert b.is_dir()
        s2.close()
    assert not b.exists()
    s1.close()  # the tmpdir is this process's no more: a leftover from now on
    Store(root).close()
    assert os.listdir(root / "tmp") == []


def test_a_dead_builders_work_and_unmarked_trash_are_swept(root: Path) -> None:
    Store(root).close()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            incomplete.make(root / "tmp", "layer-")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    (root / "tmp" / "trash-layer-0").mkdir()
    assert len(os.listdir(root / "tmp")) == 2
    Store(root).close()
    assert os.listdir(root / "tmp") == []


def test_a_container_directory_no_record_names_is_swept(engine, busybox_rootfs, root: Path) -> None:
    """A crash between making a container's directory and committing its
    record (or between deleting the record and the directory) left the
    directory for good: the sweep removes it, but not a directory whose
    record an insert under way may still commit, nor anything else."""
    from volmerge.runtime.options import RunOptions

    c = engine.create(RunOptions(image=str(busybox_rootfs), command=["true"]))
    orphan = root / "containers" / ("ab" * 32)
    (orphan / "upper").mkdir(parents=True)
    (orphan / "upper" / "f").write_text("written before the crash")
    other = root / "containers" / "not-a-container-id"
    other.mkdir()
    Store(root).close()
    assert not orphan.exists() and c.dir.is_dir() and other.is_dir()
    assert not (root / "locks" / f"container-{'ab' * 32}.lock").exists()
    orphan.mkdir()
    with engine.store.lock("containers"):  # an insert under way: its record may come
        Store(root).close()
        assert orphan.is_dir()
    Store(root).close()
    assert not orphan.exists()
    other.rmdir()
    engine.remove(c.id)
