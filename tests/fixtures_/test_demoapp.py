"""The demo application run directly with the host's Python (no container)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volmerge.demoimages.app import server as demo
from volmerge.fixtures.images import demo_config, demo_policy, demo_seed

SERVER = Path(demo.__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, data: Path, version: int) -> None:
        self.port = free_port()
        env = dict(os.environ, PORT=str(self.port), DATA_DIR=str(data), DEMO_VERSION=str(version))
        self.proc = subprocess.Popen([sys.executable, str(SERVER)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("demo app did not start listening")

    def request(self, method: str, path: str, body: bytes | None = None,
                ctype: str = "text/plain") -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                     method=method, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]
        return rc


@pytest.fixture
def run_app():
    started: list[Running] = []

    def start(data: Path, version: int) -> Running:
        r = Running(data, version)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def seed_dir(path: Path, version: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in demo_seed(version).items():
        (path / name).write_bytes(data)
    return path


def test_v1_first_start_creates_db_and_settings(tmp_path: Path, run_app) -> None:
    data = tmp_path / "data"
    app = run_app(data, 1)
    assert app.request("GET", "/health") == (200, {"status": "ok", "version": 1, "notes": 0})
    assert (data / "notes.db").exists() and (data / "settings.ini").exists()
    assert demo.yaml_load((data / "settings.yaml").read_text())["theme"] == "light"


def test_v1_notes_settings_version(tmp_path: Path, run_app) -> None:
    app = run_app(seed_dir(tmp_path / "data", 1), 1)
    code, note = app.request("POST", "/notes", b"buy milk")
    assert code == 201 and note["id"] == 1
    app.request("POST", "/notes", json.dumps({"text": "call mum"}).encode(), "application/json")
    code, notes = app.request("GET", "/notes")
    assert code == 200 and [n["text"] for n in notes["notes"]] == ["buy milk", "call mum"]
    code, s = app.request("GET", "/settings")
    assert s["ini"]["server"]["page_size"] == "20" and s["yaml"]["limits"] == {"max_notes": 1000}
    assert app.request("GET", "/version") == (200, {"version": 1, "schema": 1})
    assert app.request("POST", "/notes", b"  ")[0] == 400
    assert app.request("GET", "/nope")[0] == 404
    conn = sqlite3.connect(tmp_path / "data" / "notes.db")
    assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [("buy milk",), ("call mum",)]
    conn.close()


def test_v2_schema_and_tags(tmp_path: Path, run_app) -> None:
    app = run_app(seed_dir(tmp_path / "data", 2), 2)
    body = json.dumps({"text": "ship v2", "tags": ["work", "urgent"], "pinned": True}).encode()
    assert app.request("POST", "/notes", body, "application/json")[0] == 201
    _, notes = app.request("GET", "/notes")
    assert notes["notes"][0]["tags"] == ["work", "urgent"] and notes["notes"][0]["pinned"] is True
    _, s = app.request("GET", "/settings")
    assert s["ini"]["server"]["page_size"] == "50" and s["ini"]["features"]["tags"] == "true"
    assert s["yaml"]["theme"] == "dark" and s["yaml"]["limits"]["max_tags"] == 10


def test_v2_refuses_a_v1_database(tmp_path: Path, run_app) -> None:
    app = run_app(seed_dir(tmp_path / "data", 1), 2)
    assert app.proc.wait(timeout=10) == 3
    err = app.proc.stderr.read()  # type: ignore[union-attr]
    assert "not a v2 schema" in err and "refusing to start" in err


def test_v3_fails_its_health_check(tmp_path: Path, run_app) -> None:
    app = run_app(seed_dir(tmp_path / "data", 3), 3)
    code, body = app.request("GET", "/health")
    assert code == 500 and body["status"] == "broken"
    assert app.request("GET", "/version")[1]["version"] == 3


def test_sigterm_stops_cleanly(tmp_path: Path, run_app) -> None:
    app = run_app(seed_dir(tmp_path / "data", 1), 1)
    assert app.stop() == 0  # not -9: stop() kills only when SIGTERM is ignored
    assert not (tmp_path / "data" / "notes.db-journal").exists()


def test_seeds_carry_each_versions_schema() -> None:
    for version, table_cols in ((1, ["id", "body", "created"]),
                                (2, ["id", "content", "created", "pinned"]),
                                (3, ["id", "content", "created", "pinned"])):
        seed = demo_seed(version)
        assert set(seed) == {"notes.db", "settings.ini", "settings.yaml"}
        assert seed["notes.db"].startswith(b"SQLite format 3\x00")
        conn = sqlite3.connect(":memory:")
        conn.deserialize(seed["notes.db"])
        assert demo.columns(conn, "notes") == table_cols
        conn.close()
    assert demo_seed(1)["notes.db"] == demo_seed(1)["notes.db"]  # reproducible


def test_policy_label_matches_shipped_file() -> None:
    import tomllib

    policy = tomllib.loads(demo_policy())
    assert policy["sql"]["rename"] == {"notes.body": "notes.content"}
    assert "io.volmerge.policy" not in demo_config(1)["Labels"]
    assert demo_config(2)["Labels"]["io.volmerge.policy"] == demo_policy()
    assert demo_config(2)["Volumes"] == {"/data": {}}
    assert demo_config(2)["Healthcheck"]["Test"][0] == "CMD-SHELL"


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(),
                     st.from_regex(r"[A-Za-z][A-Za-z0-9 ._-]{0,15}[A-Za-z0-9]", fullmatch=True)
                     .filter(lambda s: s.lower() not in ("true", "false", "yes", "no", "on", "off", "null")
                             and " #" not in s))
_yaml = st.recursive(st.dictionaries(_keys, _scalars, max_size=4),
                     lambda inner: st.dictionaries(_keys, st.one_of(_scalars, inner), min_size=1, max_size=4),
                     max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(_yaml)
def test_yaml_subset_round_trips(data: dict) -> None:
    data = {k: v for k, v in data.items() if v != {}}
    assert demo.yaml_load(demo.yaml_dump(data)) == _drop_empty(data)


def _drop_empty(d: dict) -> dict:
    return {k: (_drop_empty(v) if isinstance(v, dict) else v) for k, v in d.items()}
