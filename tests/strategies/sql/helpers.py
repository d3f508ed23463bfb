"""Small builders shared by the SQL tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def make_db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


OLD = """
CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT, score TEXT);
CREATE INDEX ix_notes_user ON notes(user_id);
CREATE TABLE alembic_version(version_num TEXT NOT NULL);
"""

NEW = """
CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, email TEXT);
CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), content TEXT,
                   score INTEGER, pinned BOOLEAN NOT NULL);
CREATE INDEX ix_notes_user ON notes(user_id);
CREATE TABLE alembic_version(version_num TEXT NOT NULL);
INSERT INTO alembic_version VALUES ('v2');
"""

LIVE_ROWS = """
INSERT INTO alembic_version VALUES ('v1');
INSERT INTO users(name) VALUES ('ann'), ('bob'), ('cid');
DELETE FROM users WHERE name = 'cid';
INSERT INTO notes VALUES (1, 1, 'hello', '3'), (2, 2, 'world', '4'), (3, 1, 'third', NULL);
"""


def trio(tmp: Path, live_extra: str = "") -> tuple[Path, Path, Path]:
    """(base, live, new) SQLite files of the notes app, v1 -> v2."""
    base = make_db(tmp / "base.db", OLD)
    live = make_db(tmp / "live.db", OLD + LIVE_ROWS + live_extra)
    new = make_db(tmp / "new.db", NEW)
    return base, live, new
