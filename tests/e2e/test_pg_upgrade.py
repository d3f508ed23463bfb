"""PostgreSQL 15 -> 16 through `volmerge upgrade`, for real: the fixture
images (Debian's 15, pgserver's 16), each running its own binaries in
temporary containers, the data replayed and verified, then rolled back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import cli_session

PG15 = "localhost/volmerge-fixture/postgres:15"
PG16 = "localhost/volmerge-fixture/postgres:16"
SOCK = "/var/run/postgresql"
VOLUME = "pgdata:/var/lib/postgresql/data"

SETUP = """
CREATE DATABASE shop;
\\c shop
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, joined date DEFAULT '2024-01-02');
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers(id),
                     total numeric(10,2), note text);
CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
INSERT INTO customers (name) SELECT 'c' || i FROM generate_series(1, 50) i;
INSERT INTO orders (customer, total, note)
  SELECT 1 + i % 50, i * 1.25, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' || i END
  FROM generate_series(1, 500) i;
SELECT nextval('invoice_no'); SELECT nextval('invoice_no'); SELECT nextval('invoice_no');
"""

CHECK = ("SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), "
         "(SELECT sum(total) FROM orders), (SELECT count(note) FROM orders), "
         "(SELECT last_value FROM invoice_no), (SELECT last_value FROM orders_id_seq), "
         "(SELECT string_agg(name, ',' ORDER BY id) FROM customers)")


#: pg_upgrade even for these small clusters (by default they are dumped and restored: quicker)
FAST = {"VOLMERGE_PG_UPGRADE_MIN_MB": "0"}


@pytest.fixture(scope="module")
def pg_root(tmp_path_factory, fixture_image) -> Path:
    root = tmp_path_factory.mktemp("pg") / "root"
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    for kind in ("postgres15", "postgres16"):
        subprocess.run([sys.executable, "-m", "volmerge", "image", "load", str(fixture_image(kind))],
                       env=env, check=True, capture_output=True)
    yield root
    from volmerge.runtime import sys as rsys

    rsys.umount_tree(root)


@pytest.fixture
def pgvm(pg_root: Path, own_netns):  # type: ignore[no-untyped-def]
    with cli_session(pg_root) as run:
        yield run


def psql(vm, sql: str, db: str = "postgres") -> str:  # type: ignore[no-untyped-def]
    p = vm("exec", "pg", "psql", "-h", SOCK, "-U", "postgres", "-d", db, "-At", "-v",
           "ON_ERROR_STOP=1", "-c", sql)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def _pg_entry(up: dict) -> dict:
    """The pg-major entry of an upgrade's JSON output, wherever it sits."""
    found: list[dict] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if x.get("strategy") == "pg-major" and "timings" in x:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(up)
    assert found, up
    return found[0]


def start_pg15(vm) -> str:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "pg", "-v", VOLUME, "--network", "none",
       "--health-cmd", f"pg_isready -h {SOCK} -U postgres", PG15, check=True)
    vm("wait", "--healthy", "pg", "--timeout", "30", check=True)
    p = vm("exec", "pg", "sh", "-c", f"psql -h {SOCK} -U postgres -v ON_ERROR_STOP=1 -q <<'EOF'\n"
                                     f"{SETUP}\nEOF")
    assert p.returncode == 0, p.stderr
    return psql(vm, CHECK, "shop")


def test_pg15_to_16_upgrade_and_rollback(pgvm) -> None:  # type: ignore[no-untyped-def]
    before = start_pg15(pgvm)
    assert before.startswith("50|500|") and "|1014|500|" in before
    assert psql(pgvm, "SHOW server_version_num").startswith("15")

    # a rehearsal on a clone first: the live 15 keeps serving, nothing is left
    p = pgvm("upgrade", "pg", "--to", PG16, "--rehearse", "--health-timeout", "60")
    assert p.returncode == 0, p.stderr
    assert psql(pgvm, "SHOW server_version_num").startswith("15")
    assert len(pgvm("ps", "-aq").stdout.split()) == 1
    assert pgvm("volume", "ls", "-q").stdout.split() == ["pgdata"]

    p = pgvm("upgrade", "pg", "--to", PG16, "--health-timeout", "60", "--json", env=FAST)
    assert p.returncode == 0, p.stderr
    up = json.loads(p.stdout)
    assert up["generation"] == 2
    entry = _pg_entry(up)
    print("pg-major timings:", json.dumps(entry.get("timings")))
    # both images' programs side by side: pg_upgrade, not dump and restore
    assert entry["method"] in ("pg_upgrade --copy", "pg_upgrade --clone"), entry["fallback"]
    assert entry["fallback"] is None
    assert psql(pgvm, "SHOW server_version_num").startswith("16")
    assert psql(pgvm, CHECK, "shop") == before
    # the sequence continues where it was, the serial too
    assert psql(pgvm, "SELECT nextval('invoice_no')", "shop") == "1021"
    ins = psql(pgvm, "INSERT INTO orders (customer, total) VALUES (1, 1) RETURNING id", "shop")
    assert ins.splitlines()[0] == "501"
    # the operator's configuration came along (socket dir, listen address, pg_hba)
    assert psql(pgvm, "SHOW listen_addresses") == "*"
    assert "0.0.0.0/0" in pgvm("exec", "pg", "cat", "/var/lib/postgresql/data/pg_hba.conf").stdout
    assert pgvm("exec", "pg", "cat", "/var/lib/postgresql/data/PG_VERSION").stdout.strip() == "16"
    # the volume shows only the new data directory (nothing of 15 shows through)
    listing = pgvm("exec", "pg", "ls", "-A", "/var/lib/postgresql/data").stdout.split()
    assert "server.log" not in listing and "PG_VERSION" in listing and "base" in listing
    mode = pgvm("exec", "pg", "stat", "-c", "%a %u", "/var/lib/postgresql/data").stdout.strip()
    assert mode == "700 999"
    # nothing temporary left: one container, one volume
    assert len(pgvm("ps", "-aq").stdout.split()) == 2  # pg and its kept generation pg.gen1
    assert pgvm("volume", "ls", "-q").stdout.split() == ["pgdata"]

    p = pgvm("rollback", "pg", "--discard-new-data")
    assert p.returncode == 0, p.stderr
    pgvm("wait", "--healthy", "pg", "--timeout", "30", check=True)
    assert psql(pgvm, "SHOW server_version_num").startswith("15")
    assert psql(pgvm, CHECK, "shop") == before


def test_pg_upgrade_dry_run_counts_and_changes_nothing(pgvm) -> None:  # type: ignore[no-untyped-def]
    before = start_pg15(pgvm)
    p = pgvm("upgrade", "pg", "--to", PG16, "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["summary"]["conflicts"] == 0
    (f,) = [f for f in rep["files"] if f["strategy"] == "pg-major"]
    assert f["action"] == "merged" and f["path"] == "PG_VERSION"
    assert "PostgreSQL 15 -> 16" in f["notes"][0] and "550 rows" in f["notes"][0], f["notes"]
    (s,) = rep["sql"]
    shop = [d for d in s["databases"] if d["database"] == "shop"][0]
    assert {t["table"]: t["rows"] for t in shop["tables"]} == {"public.customers": 50,
                                                               "public.orders": 500}
    # nothing changed: still 15, same data, no temporary container or volume
    assert psql(pgvm, "SHOW server_version_num").startswith("15")
    assert psql(pgvm, CHECK, "shop") == before
    assert len(pgvm("ps", "-aq").stdout.split()) == 1
    assert pgvm("volume", "ls", "-q").stdout.split() == ["pgdata"]



def test_pg_upgrade_refused_falls_back_to_dump_and_restore(pgvm) -> None:  # type: ignore[no-untyped-def]
    """A regproc column (an OID the new cluster would not keep):
    pg_upgrade --check refuses, the upgrade dumps and restores instead, and
    the report says which path was taken and why."""
    before = start_pg15(pgvm)
    psql(pgvm, "CREATE TABLE fns (id int PRIMARY KEY, f regproc); "
               "INSERT INTO fns VALUES (1, 'now'), (2, 'version')", "shop")
    p = pgvm("upgrade", "pg", "--to", PG16, "--health-timeout", "60", "--json", env=FAST)
    assert p.returncode == 0, p.stderr
    entry = _pg_entry(json.loads(p.stdout))
    assert entry["method"] == "dump and restore"
    assert "pg_upgrade --check" in entry["fallback"] and "reg*" in entry["fallback"], entry
    assert "pg_upgrade not used" in entry["notes"][0], entry["notes"]
    assert psql(pgvm, "SHOW server_version_num").startswith("16")
    assert psql(pgvm, CHECK, "shop") == before
    assert psql(pgvm, "SELECT string_agg(f::text, ',' ORDER BY id) FROM fns", "shop") == "now,version"
