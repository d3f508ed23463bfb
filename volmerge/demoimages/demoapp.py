"""The demo application's image layer (the notes app, app/server.py, in
three versions): its files, its seed data, its policy and its config."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from types import ModuleType

from .kinds import PATH_ENV
from .ociwriter import Dir, Entry, File

DEMOAPP = Path(__file__).resolve().parent / "app"

DEMO_FILES = ("server.py", "pgwire.py", "pgnotes.py")


def _demo_module() -> ModuleType:
    """The demo app (app/server.py) as a module: the single source of the app's
    schemas and default settings."""
    from .app import server

    return server


def demo_seed(version: int) -> dict[str, bytes]:
    """The demo app's seed content of /data for a version: default settings
    and an empty database with the version's schema."""
    mod = _demo_module()
    sv = mod.schema_version(version)
    out = {"settings.ini": mod.DEFAULT_INI[sv].encode(), "settings.yaml": mod.DEFAULT_YAML[sv].encode()}
    with tempfile.TemporaryDirectory(prefix="volmerge-demo-seed-") as tmp:
        db = Path(tmp) / "notes.db"
        conn = sqlite3.connect(db)
        try:
            mod.create_schema(conn, version)
        finally:
            conn.close()
        out["notes.db"] = db.read_bytes()
    return out


def demo_policy() -> str:
    return (DEMOAPP / "policy.toml").read_text()


def demo_entries(version: int) -> dict[str, Entry]:
    e: dict[str, Entry] = {"app": Dir(), "data": Dir(0o755)}
    for name in DEMO_FILES:
        e[f"app/{name}"] = File((DEMOAPP / name).read_bytes())
    e["app/VERSION"] = f"{version}\n"
    for name, data in demo_seed(version).items():
        e[f"data/{name}"] = File(data)
    if version >= 2:
        e["etc/volmerge/policy.toml"] = demo_policy()
    return e


def demo_config(version: int) -> dict:
    labels = {
        "org.opencontainers.image.title": "volmerge demo notes",
        "org.opencontainers.image.version": str(version),
    }
    if version >= 2:
        labels["io.volmerge.policy"] = demo_policy()
    return {
        "Env": [PATH_ENV, "PORT=8080", "DATA_DIR=/data", "LANG=C.UTF-8"],
        "Cmd": ["python3", "/app/server.py"],
        "WorkingDir": "/app",
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGTERM",
        "Healthcheck": {
            "Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health || exit 1"],
            "Interval": 1_000_000_000, "Timeout": 3_000_000_000,
            "StartPeriod": 0, "Retries": 3,
        },
        "Labels": labels,
    }
