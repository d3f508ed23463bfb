"""A real PostgreSQL 15 server for tests: this host's binaries (`make test`
installs Debian's postgresql-15), a unix socket only, started and stopped by
the caller.  Missing binaries fail the test: a skip would prove nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG15_BIN = "/usr/lib/postgresql/15/bin"
#: what a throw-away test cluster needs no durability for
FAST = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


def require_pg15() -> None:
    if not os.path.exists(os.path.join(PG15_BIN, "postgres")):
        pytest.fail(f"PostgreSQL 15 server binaries missing in {PG15_BIN}: "
                    "`make test` installs postgresql-15")


@contextmanager
def pg15(data: Path, sockdir: Path, *, remove: Path | None = None) -> Iterator[Any]:
    """A started PgServer on ``data`` listening in ``sockdir``; stopped after
    (and ``remove`` deleted)."""
    require_pg15()
    from volmerge.strategies.sql.pgtemp import PgServer
    from volmerge.upgrade.pgdata import host_tools

    server = PgServer(host_tools(PG15_BIN), str(data), str(sockdir), options=FAST)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.stop()
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
