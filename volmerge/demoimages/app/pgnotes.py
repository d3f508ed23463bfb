"""The notes app's notes in PostgreSQL (the stack of ``volmerge demo --stack``).

When ``NOTES_DATABASE_URL`` (``postgresql://USER@HOST[:PORT]/DB``, trust
authentication) is set, the app keeps its notes in that database instead of
SQLite, through pgwire.py.  Each release migrates the schema forward at
start-up, as applications beside a database server do (the server's data is
not the app's file, so volmerge cannot replay it; it snapshots it):

- schema 1 (v1): notes(id, body, created).
- schema 2 (v2): body renamed to content, ``pinned boolean NOT NULL DEFAULT
  false``, a tags table: the same change as the SQLite schema's.
- schema 3 (v3): ``archived boolean NOT NULL DEFAULT false``, then v3 fails
  its health check: the broken release did change the database, so only a
  rollback that takes the database back with the app gives v2 its schema.

Each migration and its version bump run in one transaction.  An app never
starts on a schema newer than its own (no silent downgrade); it waits a
little for one to go away first (``PgNotes.migrate``).
"""

from __future__ import annotations

import sys
import time
from typing import Any
from urllib.parse import urlsplit

try:  # run as a script in the image (/app on sys.path) or as a package module
    from pgwire import Connection, PgError  # type: ignore[import-not-found]
except ImportError:
    from .pgwire import Connection, PgError

MIGRATIONS: dict[int, str] = {
    1: "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, created text NOT NULL)",
    2: "ALTER TABLE notes RENAME COLUMN body TO content;"
       " ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false;"
       " CREATE TABLE tags (id serial PRIMARY KEY,"
       " note_id integer NOT NULL REFERENCES notes(id) ON DELETE CASCADE, name text NOT NULL)",
    3: "ALTER TABLE notes ADD COLUMN archived boolean NOT NULL DEFAULT false",
}
TEXT_COLUMN = {1: "body", 2: "content", 3: "content"}


class NewerSchema(RuntimeError):
    pass


class PgNotes:
    def __init__(self, url: str, version: int) -> None:
        u = urlsplit(url)
        if u.scheme not in ("postgresql", "postgres") or not u.hostname:
            raise ValueError(f"NOTES_DATABASE_URL: expected postgresql://USER@HOST/DB, got {url!r}")
        if u.password:
            raise ValueError("NOTES_DATABASE_URL: the notes app speaks trust authentication "
                             "only (no password)")
        self.where: dict[str, Any] = dict(
            host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
            database=u.path.lstrip("/") or "postgres")
        self.version = version
        self.schema = 0

    def connect(self) -> Connection:
        return Connection(**self.where)

    def wait(self, timeout: float = 30.0) -> None:
        """The database may still be starting (or being upgraded): retry."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return
            except (OSError, PgError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def migrate(self, newer_wait: float = 20.0) -> int:
        """Bring the schema to this release's; the schema version it is at.

        A schema newer than this release's is refused, after ``newer_wait``
        seconds: a stack's rollback restarts the old app before it restores
        the database (the undo runs in reverse, the app's steps first), so
        for a moment the old app sees what the broken release migrated."""
        deadline = time.monotonic() + newer_wait
        while True:
            try:
                return self._migrate()
            except NewerSchema as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"{exc}: waiting for a rollback to restore the database",
                      file=sys.stderr, flush=True)
                time.sleep(1.0)

    def _migrate(self) -> int:
        self.wait()
        with self.connect() as c:
            c.script("CREATE TABLE IF NOT EXISTS notes_schema (version integer NOT NULL);"
                     " INSERT INTO notes_schema SELECT 0"
                     " WHERE NOT EXISTS (SELECT 1 FROM notes_schema)")
            have = int(c.query("SELECT max(version) FROM notes_schema")[0][0] or 0)
            if have > self.version:
                raise NewerSchema(f"notes v{self.version}: the database's schema is {have}, "
                                  f"newer than this release's ({self.version})")
            for v in range(have + 1, self.version + 1):
                c.script(f"{MIGRATIONS[v]}; UPDATE notes_schema SET version = {v}")
        self.schema = self.version
        return self.schema

    def notes(self) -> list[dict]:
        col = TEXT_COLUMN[self.schema]
        with self.connect() as c:
            if self.schema >= 2:
                rows = c.query(f"SELECT id, {col}, created, pinned FROM notes ORDER BY id")
                tags: dict[str, list[str]] = {}
                for note_id, name in c.query("SELECT note_id, name FROM tags ORDER BY id"):
                    tags.setdefault(str(note_id), []).append(str(name))
                return [{"id": int(str(r[0])), "text": r[1], "created": r[2],
                         "pinned": r[3] == "t", "tags": tags.get(str(r[0]), [])} for r in rows]
            rows = c.query(f"SELECT id, {col}, created FROM notes ORDER BY id")
            return [{"id": int(str(r[0])), "text": r[1], "created": r[2]} for r in rows]

    def add_note(self, text: str, created: str, tags: list[str], pinned: bool) -> dict:
        col = TEXT_COLUMN[self.schema]
        with self.connect() as c:
            if self.schema >= 2:
                c.script("BEGIN")
                try:
                    (row,) = c.query(f"INSERT INTO notes ({col}, created, pinned)"
                                     " VALUES ($1, $2, $3) RETURNING id",
                                     text, created, "t" if pinned else "f")
                    for t in tags:
                        c.query("INSERT INTO tags (note_id, name) VALUES ($1, $2)",
                                str(row[0]), str(t))
                    c.script("COMMIT")
                except BaseException:
                    c.script("ROLLBACK")
                    raise
            else:
                (row,) = c.query(f"INSERT INTO notes ({col}, created) VALUES ($1, $2)"
                                 " RETURNING id", text, created)
        return {"id": int(str(row[0])), "text": text, "created": created}

    def count(self) -> int:
        with self.connect() as c:
            return int(str(c.query("SELECT count(*) FROM notes")[0][0]))
