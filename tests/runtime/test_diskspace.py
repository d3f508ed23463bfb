"""runtime.diskspace: a full disk recognised however it surfaced, and its
message (no root needed)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from volmerge.runtime.diskspace import NoSpace, is_no_space, no_space, size_text, space_of
from volmerge.runtime.errors import NotDone


def test_recognised_however_it_surfaced() -> None:
    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_no_space(sqlite3.OperationalError("database or disk is full"))
    assert is_no_space(NotDone("import of x.tar failed: tar: ./big: Wrote only 5120 of 10240 bytes"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("merge failed") from exc
    except RuntimeError as wrapped:
        assert is_no_space(wrapped)
    assert not is_no_space(OSError(errno.EIO, "Input/output error"))
    assert not is_no_space(NotDone("health check failed"))
    assert not is_no_space(None)


def test_sqlite_io_error_counts_only_on_a_full_file_system(tmp_path: Path) -> None:
    """SQLite says "disk I/O error" when it cannot create its WAL; this disk
    is far from full, so that is a real I/O error."""
    assert not is_no_space(sqlite3.OperationalError("disk I/O error"), tmp_path)
    assert not is_no_space(sqlite3.OperationalError("disk I/O error"))


def test_message_names_the_file_system(tmp_path: Path) -> None:
    fs = space_of(tmp_path / "not" / "yet")  # the nearest existing parent
    assert fs is not None and os.path.ismount(fs.mount_point) and fs.fstype != "?"
    assert fs.total >= fs.free >= 0
    exc = no_space(tmp_path, needed=fs.free + 5_000_000, what="import of v.tar")
    assert isinstance(exc, NoSpace) and exc.exit_code == 1
    msg = str(exc)
    assert msg.startswith(f"no space left on {fs.mount_point} ({fs.fstype}, ")
    assert " during import of v.tar: needed ~5MB more; rolled back: " in msg
    assert "\n" not in msg


def test_size_text() -> None:
    assert [size_text(n) for n in (0, 999, 1000, 1_500_000, 2_000_000_000)] == \
        ["0B", "999B", "1kB", "1.5MB", "2GB"]
