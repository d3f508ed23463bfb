"""A real PostgreSQL 15 server for the SQL tests, started once per session.

It runs as an unprivileged system user (PostgreSQL refuses root), listens
only on a unix socket in the session's scratch directory and keeps its
dynamic shared memory in its data directory, so nothing appears in /tmp or
/dev/shm.  Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from tests.pg import pg15

_counter = itertools.count()


def pg16_bindir() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")  # located, not imported (its import writes files)
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).parent / "pginstall" / "bin"
    return str(d) if (d / "postgres").exists() else None


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("pg15")
    with pg15(d / "data", d / "sock", remove=d) as server:
        yield server


@pytest.fixture
def pg_db(pg_server):
    """A fresh, empty database: (url, psycopg connection factory)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_counter)}"
    admin = psycopg.connect(pg_server.url("postgres"), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url(name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_server):
    """A URL naming a database that does not exist yet (the replay creates it)."""
    import psycopg

    name = f"n{os.getpid()}_{next(_counter)}"
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
