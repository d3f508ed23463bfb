"""runtime.incomplete: work in progress is marked, crash leftovers swept (no root needed)."""

from __future__ import annotations

import os

import pytest

from volmerge.runtime import incomplete


@pytest.mark.unit
def test_building_removes_on_error_and_keeps_what_was_renamed(tmp_path):
    with pytest.raises(RuntimeError), incomplete.building(tmp_path, "job") as d:
        assert incomplete.is_marked(d.name) and d.name.startswith("job")
        (d / "half").write_text("x")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with incomplete.building(tmp_path, "job") as d:
        (d / "done").write_text("x")
        os.rename(d, tmp_path / "final")
    assert os.listdir(tmp_path) == ["final"]
    assert (tmp_path / "final" / "done").read_text() == "x"


@pytest.mark.unit
def test_sweep_leaves_live_work_alone(tmp_path):
    with incomplete.building(tmp_path, "job") as d:
        assert incomplete.sweep(tmp_path) == []
        assert d.is_dir()


@pytest.mark.unit
def test_sweep_removes_what_a_dead_builder_left(tmp_path):
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            path, _fd = incomplete.make(tmp_path, "job")
            (path / "half").write_text("x")
        finally:
            os._exit(0)  # a crash: the flock goes with the process
    os.waitpid(pid, 0)
    (tmp_path / "unmarked").mkdir()
    (leftover,) = [n for n in os.listdir(tmp_path) if incomplete.is_marked(n)]
    assert incomplete.sweep(tmp_path, prefix="other") == []
    assert incomplete.sweep(tmp_path, prefix="job") == [leftover]
    assert os.listdir(tmp_path) == ["unmarked"]


@pytest.mark.unit
def test_sweep_ignores_symlinks(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / f"x{incomplete.MARK}1").symlink_to(target)
    assert incomplete.sweep(tmp_path) == []
    assert target.is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a second owner")
def test_sweep_ignores_another_users_entries(tmp_path):
    d = tmp_path / f"x{incomplete.MARK}1"
    d.mkdir()
    os.chown(d, 65534, 65534)
    assert incomplete.sweep(tmp_path) == []
    assert d.is_dir()


@pytest.mark.unit
def test_make_survives_sweeps_racing_it(tmp_path):
    """A sweep by another process may meet a directory between its mkdir and
    its flock (the test suite's parallel `image load`s did): make() tries a new
    name and always returns a directory it holds, never a removed one."""
    import threading
    import time

    stop = threading.Event()
    swept: list[str] = []

    def sweeper() -> None:
        while not stop.is_set():
            swept.extend(incomplete.sweep(tmp_path))

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    made = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            path, fd = incomplete.make(tmp_path, "load-")
            try:
                assert path.is_dir()
                st, mine = os.lstat(path), os.fstat(fd)
                assert (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
                assert incomplete.sweep(tmp_path, prefix=path.name) == []  # held: left alone
            finally:
                os.rmdir(path)
                os.close(fd)
            made += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert made > 50
