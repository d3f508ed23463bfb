"""`volmerge demo --stack`: the upgrade story told for a compose stack.

The stack is the notes app with its notes in PostgreSQL: the compose file
gives the app ``NOTES_DATABASE_URL`` (the db service by name on the project
network), and the app stores and reads its notes there
(volmerge/demoimages/app/pgnotes.py; the app image holds Python's standard
library only, so it speaks PostgreSQL's wire protocol itself, pgwire.py,
with its values passed apart from the SQL).  Its own volume keeps its
settings files, which volmerge merges as in the single-container demo (and
the image's seed notes.db, which the stack's app leaves unused).

A release ships both images: ``notes:N`` and ``notes-db:N``.  Release 1 is
app v1 (schema 1) on PostgreSQL 15; release 2 is app v2, which migrates
the schema at start-up (a column renamed, ``pinned`` added with a default,
a tags table), on PostgreSQL 16 (a major version: volmerge's pg-major
upgrade dumps and restores the data directory); release 3 re-tags release
2's PostgreSQL 16 with app v3, which migrates the schema again (schema 3)
and then fails its health check.  The database was changed by the broken
release (the demo sees v3 answer on schema 3 while it is tried), so only
the one-journal stack rollback (the db service restored from its snapshot
with the app) brings v2 back: v2 refuses to start on a schema newer than
its own.

The steps drive ``volmerge compose`` as an operator types it (a subprocess
against the same store and the demo's network namespace) and check each
claim through the app's HTTP port and, for what is in the database, with
``volmerge compose exec db psql``: the notes and the schema in PostgreSQL,
the preview, the one-transaction upgrade (database first), and the broken
release rolling the database back with the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from volmerge.demo import PORT, DemoContext, Step, _check, _http

PROJECT = "notesstack"
APP = "localhost/volmerge-demo/notes"
DB = "localhost/volmerge-demo/notes-db"
DB_OF_RELEASE = {1: "postgres15", 2: "postgres16", 3: "postgres16"}
SOCK = "/var/run/postgresql"
NOTES = ("buy milk", "call the plumber", "it's fine'); DROP TABLE notes; --")
NOTE_ON_V2 = "written on v2"
V2_COLUMNS = ["id", "content", "created", "pinned"]

COMPOSE = f"""\
# The notes stack of `volmerge demo --stack`: RELEASE picks the images.
services:
  db:
    image: {DB}:${{RELEASE:-1}}
    volumes: [pgdata:/var/lib/postgresql/data]
  app:
    image: {APP}:${{RELEASE:-1}}
    environment:
      NOTES_DATABASE_URL: postgresql://postgres@db:5432/postgres
    ports: ["{PORT}:8080"]
    volumes: [settings:/data]
    depends_on:
      db: {{condition: service_healthy}}
volumes:
  pgdata: {{}}
  settings: {{}}
"""


def _post_json(path: str, obj: dict[str, Any]) -> Any:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(obj).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


class _Watch:
    """Polls the app's /version in a thread while a step runs: the answers
    seen (the broken release is gone again when the step returns)."""

    def __init__(self) -> None:
        import threading

        self.seen: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.wait(0.1):
            try:
                v = _http("/version")
            except (OSError, ValueError):
                continue  # the app between containers
            if v not in self.seen:
                self.seen.append(v)

    def __enter__(self) -> list[Any]:
        self.thread.start()
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()



def _pg_method(rep: list[dict[str, Any]]) -> str:
    """How the database's major upgrade went, as its report says (pg_upgrade,
    or dump and restore and why)."""
    todo: list[Any] = [rep]
    while todo:  # the major upgrade's report sits in the db volume's merge report
        x = todo.pop()
        if isinstance(x, dict):
            if x.get("method") and "new_version" in x:
                why = x.get("fallback")
                # "pg_upgrade --copy" / "--clone", or "dump and restore"
                return (x["method"] if str(x["method"]).startswith("pg_upgrade") else
                        "dump and restore" + (f" ({why})" if why else ""))
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
    return "pg-major"

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

    def app_healthy(self, timeout: float = 60) -> bool:
        """``volmerge wait --healthy`` on the app, asked again while the
        deadline allows: an app waiting for its database may be reported
        unhealthy before it passes."""
        env = dict(os.environ, VOLMERGE_ROOT=str(self.ctx.store.root))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            p = subprocess.run([sys.executable, "-m", "volmerge", "wait", "--healthy",
                                f"{PROJECT}-app-1", "--timeout", f"{max(left, 1):.0f}"], env=env,
                               capture_output=True, text=True, timeout=timeout + 60, check=False)
            if p.returncode == 0:
                return True
            if time.monotonic() + 1 > deadline:
                return False
            time.sleep(1)

    def in_pg(self, release: int) -> dict[str, Any]:
        """What the database holds, read with psql in the db service: its
        server version, the app's schema version and columns, the notes."""
        sep = "\x1f"  # no note the demo writes holds it
        schema = int(self.psql("SELECT version FROM notes_schema", release))
        col = "body" if schema == 1 else "content"
        return {
            "server_version": self.psql("SHOW server_version", release),
            "schema": schema,
            "columns": self.psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position)"
                                 " FROM information_schema.columns"
                                 " WHERE table_name = 'notes'", release).split(","),
            "notes": [t for t in self.psql(f"SELECT string_agg({col}, E'{sep}' ORDER BY id)"
                                           " FROM notes", release).split(sep) if t],
        }

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
        _check(self.app_healthy(), "app v1 becomes healthy")
        v = _http("/version")
        _check(v == {"version": 1, "schema": 1, "storage": "postgresql"},
               f"app v1 answers on the published port, its notes in PostgreSQL: {v}")
        pg = self.in_pg(1)
        _check(pg["server_version"].startswith("15."), "db is PostgreSQL 15")
        _check(pg["schema"] == 1 and pg["columns"] == ["id", "body", "created"],
               f"app v1 created schema 1 in the db service: {pg}")
        return (f"RELEASE=1 volmerge compose -p {PROJECT} up -d: db (PostgreSQL 15) healthy, "
                "then app v1, which created its schema 1 in the db service"), {"pg": pg}

    def write(self) -> tuple[str, dict[str, Any]]:
        for text in NOTES:
            _http("/notes", text.encode())
        _check(_http("/notes")["count"] == 3, "3 notes read back through the app")
        pg = self.in_pg(1)
        _check(pg["notes"] == list(NOTES), f"the 3 notes are rows of PostgreSQL: {pg['notes']}")
        return ("3 notes written through the app (one of them SQL-looking text, stored as "
                "text): psql in the db service reads them in table notes"), {"pg": pg}

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
        _check(any(f["strategy"] == "pg-major" for (s, _p), f in by.items() if s == "db"),
               "the database's data directory goes from PostgreSQL 15 to 16")
        _check(by[("app", "settings.ini")]["action"] != "unchanged",
               "the app's settings are merged into v2's")
        _check(_http("/version")["version"] == 1, "the preview changed nothing")
        _check(self.in_pg(1)["schema"] == 1, "the preview left the database's schema alone")
        return "RELEASE=2 compose upgrade --dry-run: " + " | ".join(lines), {}

    def upgrade(self) -> tuple[str, dict[str, Any]]:
        p = self.compose("upgrade", "--health-timeout", "60", "--json", release=2)
        rep = json.loads(p.stdout)
        _check(self.images(2) == {"db": f"{DB}:2", "app": f"{APP}:2"}, "both on release 2")
        _check(_http("/version") == {"version": 2, "schema": 2, "storage": "postgresql"},
               "app v2 answers on the same port, on schema 2")
        notes = _http("/notes")
        _check([n["text"] for n in notes["notes"]] == list(NOTES) and
               not any(n["pinned"] for n in notes["notes"]),
               "every note carried into v2's schema (pinned: false, the new column's default)")
        pg = self.in_pg(2)
        _check(pg["server_version"].startswith("16."), "db is PostgreSQL 16")
        _check(pg["schema"] == 2 and pg["columns"] == V2_COLUMNS and pg["notes"] == list(NOTES),
               f"app v2 migrated the database to schema 2 with the 3 notes: {pg}")
        down = {r["service"]: r.get("timings", {}).get("downtime") for r in rep}
        shown = ", ".join(f"{s} {t * 1000:.0f} ms" for s, t in down.items() if t is not None)
        how = _pg_method(rep)
        return (f"RELEASE=2 compose upgrade: one transaction, db 15 -> 16 ({how}, "
                "verified), then app v2, which migrated the notes table to schema 2 "
                f"(column pinned added, default false); downtime {shown}"), \
            {"downtime": down, "pg": pg}

    def broken(self) -> tuple[str, dict[str, Any]]:
        _post_json("/notes", {"text": NOTE_ON_V2, "tags": ["home"], "pinned": True})
        before = self.in_pg(2)
        _check(before["notes"] == [*NOTES, NOTE_ON_V2], "the 4th note is in PostgreSQL")
        with _Watch() as seen:  # what answers on the app's port while v3 is tried
            p = self.compose("upgrade", "--health-timeout", "5", release=3, ok=False)
        _check({"version": 3, "schema": 3, "storage": "postgresql"} in seen,
               f"app v3 ran on the database migrated to schema 3 (answers seen: {seen})")
        _check(p.returncode == 1, f"the broken release was refused (exit {p.returncode})")
        _check("stopped at service app" in p.stderr and "(db)" in p.stderr,
               "the app failed and the db upgraded before it was rolled back")
        _check(self.images(2) == {"db": f"{DB}:2", "app": f"{APP}:2"}, "both back on release 2")
        # the rollback restarts app v2 before it restores the database: v2
        # waits for the schema it knows (it would refuse schema 3), then serves
        _check(self.app_healthy(), "app v2 is healthy again")
        logs = self.compose("logs", "app", release=2)
        waited = sum("waiting for a rollback" in line
                     for line in (logs.stdout + logs.stderr).splitlines())
        # v2 refuses a schema newer than its own: it serves again only because
        # v3's migration (schema 3) went with the database's rollback
        _check(_http("/version") == {"version": 2, "schema": 2, "storage": "postgresql"},
               "app v2 serves again on schema 2")
        notes = _http("/notes")["notes"]
        _check([n["text"] for n in notes] == [*NOTES, NOTE_ON_V2] and notes[-1]["pinned"]
               and notes[-1]["tags"] == ["home"], "all 4 notes intact, the 4th pinned and tagged")
        pg = self.in_pg(2)
        _check(pg == before, f"the database is as before release 3: schema 2, 4 notes: {pg}")
        return ("RELEASE=3: db upgraded to notes-db:3, app v3 migrated the database to schema 3 "
                "and failed its health check: both rolled back in the same transaction (db on "
                "notes-db:2 with schema 2 and its 4 notes, app v2 serving them)"), \
            {"reason": p.stderr.strip(), "pg": pg, "seen": seen, "v2_waited_s": waited}

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
