"""Real Debian PostgreSQL images through a real registry: a container runs
PostgreSQL 15 (bookworm) pulled from the registry and follows its tag; 17
(trixie) is pushed under that tag and ``auto-update`` carries the data
across the major version — by pg_upgrade, the old image's programs run in
the new image's container —; a broken 17 is rolled back with the data;
and ``rollback`` returns to 15 (issue: real workloads in)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.registry.conftest import open_registry, pki
from volmerge.autoupdate import LABEL
from volmerge.demoimages.ociwriter import File, make_layer, write_archive
from volmerge.fixtures import debian

__all__ = ["open_registry", "pki"]

pytestmark = pytest.mark.slow
SOCK = "/var/run/postgresql"
USER = "appuser"

SETUP = """
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                        tier text DEFAULT 'basic');
CREATE INDEX customers_name ON customers (name);
CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
INSERT INTO customers (name, tier) SELECT 'c' || i, CASE WHEN i % 5 = 0 THEN 'gold' END
  FROM generate_series(1, 300) i;
SELECT nextval('invoice_no'), nextval('invoice_no');
CREATE VIEW gold AS SELECT id, name FROM customers WHERE tier = 'gold';
CREATE MATERIALIZED VIEW balances AS SELECT bid, sum(abalance) AS total FROM pgbench_accounts GROUP BY bid;
"""

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "customers")
OIDS = ("SELECT string_agg(relname || ':' || oid || ':' || relfilenode, ',' ORDER BY relname) "
        "FROM pg_class WHERE relname IN ('pgbench_accounts', 'customers')")


def _broken_17(out: Path) -> Path:
    """PostgreSQL 17 whose entrypoint fails: an upgrade to it must roll back."""
    img = debian.IMAGES["postgres17"]
    base = debian.base_layer("postgres17")
    top = make_layer({"usr/local/bin/docker-entrypoint.sh":
                      File("#!/bin/sh\necho 'broken release' >&2\nexit 1\n", 0o755)},
                     out.parent / "broken-top.tar")
    return write_archive(out, [base, top], debian._config(img),
                         "localhost/volmerge-debian/postgres:17-broken")


@pytest.fixture(scope="module")
def images(tmp_path_factory):  # type: ignore[no-untyped-def]
    if shutil.which("mmdebstrap") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("mmdebstrap is needed")
    from volmerge.fixtures.images import FixtureError

    d = tmp_path_factory.mktemp("debian")
    try:  # built before the session's network namespace (make test)
        return {"15": debian.debian_image("postgres15", build=False),
                "17": debian.debian_image("postgres17", build=False),
                "17-broken": _broken_17(d / "broken.tar")}
    except FixtureError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))


def _psql(cli, sql: str, db: str = "app") -> str:  # type: ignore[no-untyped-def]
    p = cli("exec", "pg", "psql", "-h", SOCK, "-U", USER, "-d", db, "-At", "-v",
            "ON_ERROR_STOP=1", "-c", sql, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def _sums(cli) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for t in TABLES:
        key = "aid" if t == "pgbench_accounts" else ("bid" if t == "pgbench_branches" else
                                                     ("tid" if t == "pgbench_tellers" else "id"))
        out[t] = _psql(cli, f"SELECT count(*) || ':' || md5(string_agg(x::text, '|' ORDER BY {key}))"
                            f" FROM {t} x")
    out["gold"] = _psql(cli, "SELECT count(*) FROM gold")
    out["balances"] = _psql(cli, "SELECT count(*) || ':' || sum(total) FROM balances")
    return out


@pytest.fixture
def cli(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The CLI on a store with a short root: the PostgreSQL upgrade's sockets
    live below it, and a unix socket path has 107 bytes at most."""
    from volmerge.runtime import sys as rsys

    from .conftest import cli_session

    root = tmp_path_factory.mktemp("deb") / "r"
    with cli_session(root) as run:
        yield run
    rsys.umount_tree(root)


def _auto_update(cli, env: dict[str, str]) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    r = cli("auto-update", "--json", env=env, timeout=1200)
    (u,) = json.loads(r.stdout)
    return r.returncode, u


def _serving(cli, major: str) -> None:  # type: ignore[no-untyped-def]
    """The container is healthy again and its server is of ``major``."""
    assert cli("wait", "--healthy", "pg", "--timeout", "120", timeout=180).returncode == 0
    assert _psql(cli, "SHOW server_version_num").startswith(major)


@pytest.mark.timeout(1800)
def test_debian_postgres_15_to_17_by_auto_update(cli, open_registry, images,
                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"VOLMERGE_CERTS_D": str(open_registry.certs_d),
           "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    follow = open_registry.ref("postgres:stable")
    for v in ("15", "17", "17-broken"):
        r = cli("image", "load", str(images[v]), timeout=600)
        assert r.returncode == 0, r.stderr

    def publish(ref: str) -> None:
        r = cli("push", "-q", ref, follow, env=env, timeout=600)
        assert r.returncode == 0, r.stderr

    publish(debian.IMAGES["postgres15"].ref)
    assert cli("pull", "-q", follow, env=env, timeout=600).returncode == 0
    r = cli("run", "-d", "--name", "pg", "--network", "none", "-l", f"{LABEL}=registry",
            "-e", f"POSTGRES_USER={USER}", "-e", "POSTGRES_PASSWORD=s3cret", "-e", "POSTGRES_DB=app",
            "-v", "pgdata:/var/lib/postgresql/data", follow)
    assert r.returncode == 0, r.stderr
    try:
        assert cli("wait", "--healthy", "pg", "--timeout", "120", timeout=180).returncode == 0
        # pgbench's scale 10: a million accounts, carried row for row through the major upgrade
        p = cli("exec", "pg", "pgbench", "-i", "-s", "10", "-q", "-h", SOCK, "-U", USER, "app",
                timeout=300)
        assert p.returncode == 0, p.stderr
        p = cli("exec", "pg", "sh", "-c", f"psql -h {SOCK} -U {USER} -d app -v ON_ERROR_STOP=1 -q"
                                         f" <<'EOF'\n{SETUP}\nEOF")
        assert p.returncode == 0, p.stderr
        before = _sums(cli)
        assert _psql(cli, "SHOW server_version_num").startswith("15")
        # pg_upgrade keeps every table's OID and file (a dump and restore makes new ones)
        oids = _psql(cli, OIDS)

        # a broken 17 under the tag: rolled back, image and data
        publish("localhost/volmerge-debian/postgres:17-broken")
        code, u = _auto_update(cli, env)
        assert code == 1 and u["updated"] == "rolled back", u
        _serving(cli, "15")
        assert _sums(cli) == before

        # the real 17: the data carried across the major version
        publish(debian.IMAGES["postgres17"].ref)
        code, u = _auto_update(cli, env)
        assert code == 0 and u["updated"] == "true", u
        _serving(cli, "17")
        assert _sums(cli) == before
        assert _psql(cli, OIDS) == oids  # the fast path: pg_upgrade, not dump and restore
        hist = json.loads(cli("history", "pg", "--json").stdout)
        done = [a for a in hist if a["type"] != "generation" and a["state"] == "done"]
        print("15 -> 17 upgrade step timings:", json.dumps(done[-1]["timings"] if done else hist))
        assert _psql(cli, "SELECT nextval('invoice_no')") == "1014"
        assert _psql(cli, "INSERT INTO customers (name) VALUES ('new') RETURNING id"
                 ).splitlines()[0] == "301"
        p = cli("exec", "pg", "pgbench", "-c", "2", "-t", "20", "-h", SOCK, "-U", USER, "app",
                timeout=300)
        assert p.returncode == 0 and "number of failed transactions: 0" in p.stdout, p.stdout

        # and back to 15, the data as it was before the upgrade
        r = cli("rollback", "pg", "--discard-new-data", timeout=600)
        assert r.returncode == 0, r.stderr
        _serving(cli, "15")
        assert _sums(cli) == before
    finally:
        for cid in cli("ps", "-aq").stdout.split():
            cli("rm", "-f", cid)
