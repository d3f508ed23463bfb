"""`volmerge sql replay | schema | diff` through the real CLI."""

from __future__ import annotations

import json
import os

from .helpers import make_db, rows, trio


def test_replay_cli_writes_and_reports_json(tmp_path, cli):
    base, live, new = trio(tmp_path)
    out = tmp_path / "out.db"
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "-o", str(out),
            "--map", "notes.body=content", "--default", "notes.pinned=0", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["verified"] and data["rows"] == 6
    assert rows(out, "SELECT content FROM notes ORDER BY id") == [("hello",), ("world",), ("third",)]


def test_dry_run_prints_diff_mapping_and_writes_nothing(tmp_path, cli):
    base, live, new = trio(tmp_path)
    out = tmp_path / "out.db"
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "-o", str(out),
            "--dry-run")
    assert p.returncode == 1  # blocked: body would be lost and pinned has no value
    assert "column dropped" in p.stdout and "notes.body" in p.stdout
    assert "would lose: notes.body: 3 values" in p.stdout
    assert "notes.pinned" in p.stdout and "total: 6 rows to replay (blocked)" in p.stdout
    assert not out.exists()
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "--dry-run",
            "--map", "notes.body=content", "--default", "notes.pinned=0", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["diff"]["columns_renamed"] == {"notes.body": "notes.content"}
    assert [(t["table"], t["rows"]) for t in d["tables"]] == [("users", 2), ("notes", 3), ("alembic_version", 1)]
    assert d["problems"] == []


def test_policy_file_gives_renames_and_defaults(tmp_path, cli):
    base, live, new = trio(tmp_path)
    pol = tmp_path / "policy.toml"
    pol.write_text('[sql]\nrename = {"notes.body" = "notes.content"}\ndefaults = {"notes.pinned" = "0"}\n')
    out = tmp_path / "out.db"
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "-o", str(out),
            "--policy", str(pol))
    assert p.returncode == 0, p.stderr
    assert "replayed 6 rows in 3 tables" in p.stdout


def test_not_null_without_value_exits_1_naming_columns(tmp_path, cli):
    base, live, new = trio(tmp_path)
    out = tmp_path / "out.db"
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "-o", str(out),
            "--map", "notes.body=content")
    assert p.returncode == 1
    assert p.stderr.startswith("volmerge: error: NOT NULL column(s) with no default and no value given: "
                               "notes.pinned")
    assert len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_map_syntax_exits_2(tmp_path, cli):
    base, live, new = trio(tmp_path)
    p = cli("sql", "replay", str(live), "--schema", str(new), "-o", str(tmp_path / "o.db"), "--map", "nonsense")
    assert p.returncode == 2 and "expected TABLE.OLD=NEW" in p.stderr
    assert not (tmp_path / "o.db").exists()


def test_missing_source_exits_2(tmp_path, cli):
    p = cli("sql", "replay", str(tmp_path / "nope.db"), "--schema", str(tmp_path / "nope2.db"),
            "-o", str(tmp_path / "o.db"))
    assert p.returncode == 2 and "no such file" in p.stderr


def test_unknown_dialect_exits_2(tmp_path, cli):
    base, live, new = trio(tmp_path)
    p = cli("sql", "replay", str(live), "--schema", str(new), "-o", str(tmp_path / "o.db"),
            "--from-dialect", "oracle9")
    assert p.returncode == 2 and "unknown dialect" in p.stderr


def test_schema_and_diff_commands(tmp_path, cli):
    base, live, new = trio(tmp_path, "ALTER TABLE notes ADD COLUMN color TEXT;")
    p = cli("sql", "schema", str(new), "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert [t["name"] for t in s["tables"]] == ["users", "notes", "alembic_version"]
    assert cli("sql", "schema", str(new)).stdout.startswith("table users")
    p = cli("sql", "diff", str(base), str(live), str(new), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["diff"]["columns_kept_from_ours"] == ["notes.color"]
    assert sorted(os.listdir(tmp_path)) == ["base.db", "live.db", "new.db", "root"] or \
        sorted(os.listdir(tmp_path)) == ["base.db", "live.db", "new.db"]


def test_dry_run_shows_the_new_databases_settings(tmp_path, cli):
    base, live, new = trio(tmp_path)
    for path, uv in ((live, 3), (new, 4)):
        make_db(path, f"PRAGMA user_version = {uv};")
    p = cli("sql", "replay", str(live), "--schema", str(new), "--base", str(base), "--dry-run",
            "--map", "notes.body=content", "--default", "notes.pinned=0")
    assert p.returncode == 0, p.stderr
    assert "settings: user_version 4 (new version)" in p.stdout


def test_a_bad_setting_in_the_schema_file_exits_2(tmp_path, cli):
    base, live, new = trio(tmp_path)
    schema = tmp_path / "s.sql"
    schema.write_text("PRAGMA page_size = 3;\nCREATE TABLE t(a INTEGER);\n")
    p = cli("sql", "replay", str(live), "--schema", str(schema), "-o", str(tmp_path / "o.db"))
    assert p.returncode == 2, p.stderr
    assert "setting at line 1 is out of range: PRAGMA page_size = 3" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.db").exists()
