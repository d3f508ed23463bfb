"""The fast path's pure parts: the reason read from pg_upgrade's output and
from a server that would not start."""

from __future__ import annotations

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
