"""volmerge/demostack.py's pure parts. No root."""

from __future__ import annotations

from volmerge.demostack import _pg_method


def _report(method: str, fallback: str | None = None) -> list[dict[str, object]]:
    major = {"method": method, "fallback": fallback, "new_version": 16}
    return [{"volumes": [{"name": "pgdata", "merge": {"databases": [major]}}]}]


def test_the_major_upgrade_is_named_as_its_report_says() -> None:
    assert _pg_method(_report("pg_upgrade --copy")) == "pg_upgrade --copy"
    assert _pg_method(_report("pg_upgrade --clone")) == "pg_upgrade --clone"
    assert _pg_method(_report("dump and restore", "a small cluster")) == \
        "dump and restore (a small cluster)"
    assert _pg_method(_report("dump and restore")) == "dump and restore"
    assert _pg_method([{"volumes": []}]) == "pg-major"
