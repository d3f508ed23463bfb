"""`volmerge demo --stack`: the upgrade story told for a compose stack.

The stack is the notes app (SQLite in its volume: the app speaks no
PostgreSQL, the image holds Python's standard library only) beside a
PostgreSQL service with a database of its own (an audit log written with
psql).  A release ships both images: ``notes:N`` and ``notes-db:N``, where
release 1's database is PostgreSQL 15, release 2's PostgreSQL 16 (a major
version: the data is dumped and restored by volmerge's pg-major upgrade)
and release 3 re-tags release 2's PostgreSQL 16 with an app that fails its
health check.  The steps drive ``volmerge compose`` as an operator types
it (a subprocess against the same store and the demo's network
namespace), and check each claim: the preview, the one-transaction upgrade
(database first), and the broken release rolling the database back with
the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from volmerge.demo import PORT, DemoContext, Step, _check, _http

PROJECT = "notesstack"
APP = "localhost/volmerge-demo/notes"
DB = "localhost/volmerge-demo/notes-db"
DB_OF_RELEASE = {1: "postgres15", 2: "postgres16", 3: "postgres16"}
SOCK = "/var/run/postgresql"

COMPOSE = f"""\
# The notes stack of `volmerge demo --stack`: RELEASE picks the images.
services:
  db:
    image: {DB}:${{RELEASE:-1}}
    volumes: [pgdata:/var/lib/postgresql/data]
  app:
    image: {APP}:${{RELEASE:-1}}
    ports: ["{PORT}:8080"]
    volumes: [notes:/data]
    depends_on:
      db: {{condition: service_healthy}}
volumes:
  pgdata: {{}}
  notes: {{}}
"""


class StackStory:
    """The stack's story; each method is a step, returning (detail, data)."""

    def __init__(self, ctx: DemoContext) -> None:
        self.ctx = ctx
        self.dir = Path(ctx.store.root) / "demo-stack"
        self.file = self.dir / "compose.yaml"

    # -- helpers ---------------------------------------------------------------
    def compose(self, *args: str, release: int = 1, ok: bool = True,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, VOLMERGE_ROOT=str(self.ctx.store.root), RELEASE=str(release))
        p = subprocess.run([sys.executable, "-m", "volmerge", "compose", "-f", str(self.file),
                            "-p", PROJECT, *args], env=env, capture_output=True, text=True,
                           timeout=timeout, check=False)
        if ok and p.returncode != 0:
            raise AssertionError(f"volmerge compose {' '.join(args)}: exit {p.returncode}: "
                                 f"{p.stderr.strip()[-400:]}")
        return p

    def psql(self, sql: str, release: int) -> str:
        p = self.compose("exec", "db", "psql", "-h", SOCK, "-U", "postgres", "-At", "-v",
                         "ON_ERROR_STOP=1", "-c", sql, release=release)
        return p.stdout.strip()

    def images(self, release: int) -> dict[str, str]:
        rows = json.loads(self.compose("ps", "--json", release=release).stdout)
        return {r["Service"]: r["Image"] for r in rows}

    # -- steps -----------------------------------------------------------------
    def clean(self) -> tuple[str, dict[str, Any]]:
        """Leftovers of an earlier run go first; the release images are tagged."""
        from volmerge.demoimages import REFS

        self.dir.mkdir(parents=True, exist_ok=True)
        self.file.write_text(COMPOSE)
        gone = ""
        if self.ctx.store.root.joinpath("state.db").exists():
            p = self.compose("down", "-v", ok=False)
            gone = " (an earlier run's stack removed)" if "Removed" in p.stderr else ""
        for n, kind in DB_OF_RELEASE.items():
            if kind not in self.ctx.loaded:
                raise AssertionError(f"the stack needs the {kind} image: {REFS[kind]} not loaded")
            self.ctx.images.tag(REFS[kind], f"{DB}:{n}")
        return (f"{self.file} written; {DB}:1 = PostgreSQL 15, :2 and :3 = PostgreSQL 16" + gone,
                {"compose_file": str(self.file)})

    def up(self) -> tuple[str, dict[str, Any]]:
        self.compose("up", "-d")
        # up -d waits for what others depend on (db healthy), not for the app
        # itself: wait until its own health check passes before talking to it
        env = dict(os.environ, VOLMERGE_ROOT=str(self.ctx.store.root))
        p = subprocess.run([sys.executable, "-m", "volmerge", "wait", "--healthy",
                            f"{PROJECT}-app-1", "--timeout", "60"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
        _check(p.returncode == 0, "app v1 becomes healthy")
        _check(_http("/version")["version"] == 1, "app v1 answers on the published port")
        _check(self.psql("SHOW server_version_num", 1).startswith("15"), "db is PostgreSQL 15")
        return (f"RELEASE=1 volmerge compose -p {PROJECT} up -d: db (PostgreSQL 15) healthy, "
                "then app v1"), {}

    def write(self) -> tuple[str, dict[str, Any]]:
        for text in ("buy milk", "call the plumber", "renew the TLS certificate"):
            _http("/notes", text.encode())
        self.psql("CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL, "
                  "at timestamptz DEFAULT now()); INSERT INTO audit (what) VALUES "
                  "('signup alice'), ('signup bob'), ('alice wrote 3 notes')", 1)
        _check(_http("/notes")["count"] == 3, "3 notes stored")
        _check(self.psql("SELECT count(*) FROM audit", 1) == "3", "3 audit rows stored")
        return "3 notes written through the app; 3 audit rows into PostgreSQL with psql", {}

    def preview(self) -> tuple[str, dict[str, Any]]:
        p = self.compose("upgrade", "--dry-run", "--json", release=2)
        plan = json.loads(p.stdout)
        _check([r["service"] for r in plan] == ["db", "app"], "the database first, then the app")
        lines = []
        for r in plan:
            _check(r["summary"]["conflicts"] == 0, f"no conflicts in {r['service']}")
            changed = [f for f in r["files"] if f["action"] != "unchanged"]
            for f in changed:
                note = "; ".join(f.get("notes") or [])
                lines.append(f"{r['service']}: {f['action']} {f['path']} [{f['strategy']}]"
                             + (f" {note}" if note else ""))
        by = {(r["service"], f["path"]): f for r in plan for f in r["files"]}
        _check(by[("app", "notes.db")]["strategy"] == "sql", "notes.db replayed into v2's schema")
        _check(any(f["strategy"] == "pg-major" for (s, _p), f in by.items() if s == "db"),
               "the database's data directory goes from PostgreSQL 15 to 16")
        _check(_http("/version")["version"] == 1, "the preview changed nothing")
        return "RELEASE=2 compose upgrade --dry-run: " + " | ".join(lines), {}

    def upgrade(self) -> tuple[str, dict[str, Any]]:
        p = self.compose("upgrade", "--health-timeout", "60", "--json", release=2)
        rep = json.loads(p.stdout)
        _check(self.images(2) == {"db": f"{DB}:2", "app": f"{APP}:2"}, "both on release 2")
        _check(_http("/version")["version"] == 2, "app v2 answers on the same port")
        notes = _http("/notes")
        _check([n["text"] for n in notes["notes"]] ==
               ["buy milk", "call the plumber", "renew the TLS certificate"],
               "every note carried into v2's schema")
        _check(self.psql("SHOW server_version_num", 2).startswith("16"), "db is PostgreSQL 16")
        _check(self.psql("SELECT string_agg(what, ',' ORDER BY id) FROM audit", 2) ==
               "signup alice,signup bob,alice wrote 3 notes", "the audit rows carried to 16")
        down = {r["service"]: r.get("timings", {}).get("downtime") for r in rep}
        shown = ", ".join(f"{s} {t * 1000:.0f} ms" for s, t in down.items() if t is not None)
        return ("RELEASE=2 compose upgrade: one transaction, db 15 -> 16 (dump, restore, "
                "verified), then app v2 (3 notes replayed into the new schema); downtime "
                f"{shown}"), {"downtime": down}

    def broken(self) -> tuple[str, dict[str, Any]]:
        _http("/notes", b"written on v2")
        self.psql("INSERT INTO audit (what) VALUES ('alice wrote a 4th note')", 2)
        p = self.compose("upgrade", "--health-timeout", "5", release=3, ok=False)
        _check(p.returncode == 1, f"the broken release was refused (exit {p.returncode})")
        _check("stopped at service app" in p.stderr and "(db)" in p.stderr,
               "the app failed and the db upgraded before it was rolled back")
        _check(self.images(2) == {"db": f"{DB}:2", "app": f"{APP}:2"}, "both back on release 2")
        _check(_http("/version")["version"] == 2, "app v2 serves again")
        _check(_http("/notes")["count"] == 4, "all 4 notes intact")
        _check(self.psql("SELECT count(*) FROM audit", 2) == "4", "all 4 audit rows intact")
        return ("RELEASE=3: db upgraded to notes-db:3, then app v3 failed its health check: "
                "both rolled back in the same transaction (db on notes-db:2 with its 4 audit "
                "rows, app v2 with its 4 notes)"), {"reason": p.stderr.strip()}

    def history(self) -> tuple[str, dict[str, Any]]:
        p = self.compose("history", "--json", release=2)
        gens = json.loads(p.stdout)
        return f"compose history: {len(gens)} stack generation(s)", {"history": gens}

    def cleanup(self) -> tuple[str, dict[str, Any]]:
        self.compose("down", "-v", ok=False)
        return "compose down -v: the stack's containers, network and volumes removed", {}


def stack_steps(ctx: DemoContext) -> list[Step]:
    s = StackStory(ctx)
    return [
        Step("clean", s.clean), Step("up v1", s.up), Step("use it", s.write),
        Step("preview", s.preview), Step("upgrade", s.upgrade), Step("try v3", s.broken),
        Step("history", s.history), Step("cleanup", s.cleanup),
    ]
