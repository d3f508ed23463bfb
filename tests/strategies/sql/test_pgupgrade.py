"""The fast path's pure parts: the reason read from pg_upgrade's output and
from a server that would not start."""

from __future__ import annotations

import os

from tests.conftest import requires_root
from volmerge.strategies.sql.pgupgrade import _reason, failure

REG_STAR = """Performing Consistency Checks
-----------------------------
Checking cluster versions                                     ok
Checking database user is the install user                    ok
Checking for reg* data types in user tables                   fatal

Your installation contains one of the reg* data types in user tables.
These data types reference system OIDs that are not preserved by
pg_upgrade, so this cluster cannot currently be upgraded.
Failure, exiting
"""


def test_failure_names_the_check_and_its_explanation() -> None:
    assert failure(REG_STAR) == ("Checking for reg* data types in user tables: "
                                 "Your installation contains one of the reg* data types in user tables.")
    assert failure("could not connect to source postmaster\nFailure, exiting\n") == "Failure, exiting"
    assert failure("") == "failed"


def test_reason_prefers_the_servers_error_and_what_made_the_file_wrong() -> None:
    log = ("2026-01-01 00:00:00 UTC [7] LOG:  invalid value for parameter \"TimeZone\": \"Etc/UTC\"\n"
           "2026-01-01 00:00:00 UTC [7] FATAL:  configuration file \"/d/postgresql.conf\" contains errors\n")
    assert _reason(log).startswith('invalid value for parameter "TimeZone"')
    assert _reason("x: error while loading shared libraries: libzstd.so.1\n") == (
        "x: error while loading shared libraries: libzstd.so.1")


def test_user_bytes_counts_user_relation_files_only(tmp_path) -> None:
    """The size that chooses the path: base/<db>/<relfilenode>[_fork][.seg]
    from 16384 on; catalogs, other files and symbolic links do not count."""
    import os

    from volmerge.strategies.sql.pgmajor import user_bytes

    db = tmp_path / "base" / "16384"
    db.mkdir(parents=True)
    for name, size in (("16385", 100), ("16385.1", 10), ("16385_fsm", 1), ("16390_vm", 2),
                       ("1259", 5000), ("pg_filenode.map", 5000), ("PG_VERSION", 3)):
        (db / name).write_bytes(b"x" * size)
    (tmp_path / "big").write_bytes(b"x" * 7000)
    os.symlink(tmp_path / "big", db / "16400")
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "16500").write_bytes(b"x" * 9000)
    assert user_bytes(str(tmp_path)) == 113
    assert user_bytes(str(tmp_path / "nothing")) == 0


def test_work_beside_the_critical_path_runs_niced_the_caller_does_not() -> None:
    """lower_priority() lowers its own thread and what that thread starts
    (the servers and pg_upgrade --check beside pg_upgrade), never the
    thread that runs pg_upgrade itself."""
    import functools
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from volmerge.strategies.sql.pgfast import BESIDE_NICE, lower_priority

    mine = os.getpriority(os.PRIO_PROCESS, 0)  # the tests may run under nice already
    want = min(19, mine + 5)
    assert BESIDE_NICE > 0

    def child_nice() -> tuple[int, int]:
        out = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], capture_output=True,
                             text=True, check=True).stdout
        return os.getpriority(os.PRIO_PROCESS, 0), int(out)

    with ThreadPoolExecutor(1, initializer=functools.partial(lower_priority, want)) as low:
        assert low.submit(child_nice).result() == (want, want)
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine


def test_the_early_write_back_starts_in_a_walk_and_opens_only_regular_files(tmp_path) -> None:
    """The new cluster's write-back is started, not waited for: one walk
    that hands each regular file's dirty pages to the disk.  A FIFO (which
    an open would block on), a symbolic link to one outside, a directory
    that vanished: passed over, nothing raised, nothing written."""
    import time

    from volmerge.strategies.sql.pgfast import _presync

    data = tmp_path / "new"
    (data / "base" / "1").mkdir(parents=True)
    (data / "base" / "1" / "1259").write_bytes(b"\1" * (1 << 20))
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(data / "base" / "1" / "pipe")
    os.symlink(tmp_path / "fifo", data / "pg_tblspc")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    t0 = time.monotonic()
    _presync(str(data))
    _presync(str(tmp_path / "gone"))
    assert time.monotonic() - t0 < 10
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (data / "base" / "1" / "1259").read_bytes() == b"\1" * (1 << 20)


@requires_root
def test_the_scratch_takes_pg_upgrades_upper_only_when_it_fits_and_a_full_one_is_named(tmp_path):
    """pg_upgrade's snapshot keeps its copy-on-write layer in the scratch
    only when the data directory's bytes other than the user relations'
    fit twice over with 64 MiB to spare; a nearly full scratch is told
    apart from a full disk (its "no space" is a refusal, the fallback)."""
    from volmerge.runtime import sys as rsys
    from volmerge.strategies.sql.pgroom import full as _full
    from volmerge.strategies.sql.pgroom import upper_hint as _upper_hint

    data = tmp_path / "data"
    (data / "base" / "5").mkdir(parents=True)
    (data / "base" / "5" / "1259").write_bytes(b"\0" * (8 << 20))  # a catalog: 8 MiB
    (data / "base" / "5" / "16384").write_bytes(b"\0" * (64 << 20))  # a user table: not counted
    small, large = tmp_path / "small", tmp_path / "large"
    for room, size in ((small, "79m"), (large, "81m")):
        room.mkdir()
        rsys.mount("tmpfs", room, "tmpfs", 0, f"size={size}")
    try:
        assert _upper_hint(str(data), str(small)) == {}
        assert _upper_hint(str(data), str(large)) == {"upper_in": str(large)}
        assert not _full(str(large))
        (large / "fill").write_bytes(b"\0" * (70 << 20))
        assert _full(str(large))
        assert _upper_hint(str(data), str(tmp_path / "gone")) == {}
    finally:
        for room in (small, large):
            rsys.umount(room, rsys.MNT_DETACH)
