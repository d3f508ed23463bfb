"""The journal of upgrades, rollbacks and rehearsals, and the generations of
each container.

Tables of the state-database component ``upgrades``.  A journal row is
written (``begun``) with the whole plan before the first change; each step
is marked ``applying`` before it runs and ``applied`` with its undo data
after; the final ``committed`` records the outcome (a new generation, say)
and ``done`` follows once the post-commit work is finished.  SQLite with
``synchronous=FULL`` makes each of these durable before the next change.
The runner (runner.py) is the one writer of the step states.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from volmerge.runtime.store import Store

COMPONENT = "upgrades"
MIGRATIONS = [
    """
    CREATE TABLE upgrade_journal (
        id TEXT PRIMARY KEY,
        container TEXT NOT NULL,
        kind TEXT NOT NULL,                 -- upgrade | rollback | rehearsal
        state TEXT NOT NULL,                -- begun | committed | done | rolled-back
        from_image TEXT, to_image TEXT,
        plan TEXT NOT NULL,
        error TEXT,
        timings TEXT,
        report TEXT,
        started REAL NOT NULL,
        finished REAL
    );
    CREATE INDEX upgrade_journal_state ON upgrade_journal(state);
    CREATE TABLE upgrade_steps (
        journal_id TEXT NOT NULL REFERENCES upgrade_journal(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        kind TEXT NOT NULL,
        args TEXT NOT NULL,
        state TEXT NOT NULL,                -- pending | applying | applied | undone
        undo TEXT,
        PRIMARY KEY (journal_id, idx)
    );
    CREATE TABLE generations (
        container TEXT NOT NULL,            -- the container's name
        gen INTEGER NOT NULL,
        container_id TEXT NOT NULL,
        image_id TEXT NOT NULL,
        image_ref TEXT NOT NULL,
        volumes TEXT NOT NULL,              -- {volume: {"target": path, "pre": tag, "post": tag}}
        journal_id TEXT,
        state TEXT NOT NULL,                -- current | previous | discarded
        summary TEXT,
        created REAL NOT NULL,
        PRIMARY KEY (container, gen)
    );
    """,
    # The point of no return of a run: the index of its first step that is
    # rolled forward, not undone, once started (NULL: every step is undone).
    # Rows written before the column existed are rollbacks whose first
    # volume rollback is that step.
    """
    ALTER TABLE upgrade_journal ADD COLUMN no_return INTEGER;
    UPDATE upgrade_journal SET no_return = (
        SELECT MIN(s.idx) FROM upgrade_steps s
        WHERE s.journal_id = upgrade_journal.id AND s.kind = 'volrollback'
    ) WHERE kind = 'rollback';
    """,
]


def ensure(store: Store) -> None:
    store.ensure_schema(COMPONENT, MIGRATIONS)


def new_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Generation:
    container: str
    gen: int
    container_id: str
    image_id: str
    image_ref: str
    volumes: dict[str, dict[str, Any]]
    journal_id: str | None
    state: str
    summary: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.gen, "container_id": self.container_id, "image": self.image_ref,
            "image_id": self.image_id, "state": self.state, "created": self.created,
            "journal": self.journal_id, "volumes": self.volumes, "summary": self.summary,
        }


def _gen(row: sqlite3.Row) -> Generation:
    return Generation(
        container=row["container"], gen=row["gen"], container_id=row["container_id"],
        image_id=row["image_id"], image_ref=row["image_ref"], volumes=json.loads(row["volumes"]),
        journal_id=row["journal_id"], state=row["state"],
        summary=json.loads(row["summary"]) if row["summary"] else {}, created=row["created"],
    )


def generations(store: Store, container: str) -> list[Generation]:
    ensure(store)
    rows = store.db.execute(
        "SELECT * FROM generations WHERE container = ? ORDER BY gen", (container,)
    ).fetchall()
    return [_gen(r) for r in rows]


def leaving(gens: list[Generation], target: Generation) -> Generation | None:
    """The generation of the upgrade that last left ``target``: its ``pre``
    snapshots are the state a rollback to ``target`` returns to.  The latest,
    not the first: after a rollback to ``target`` and a new upgrade, the
    first one's snapshots predate what ``target`` wrote in between."""
    return max((g for g in gens if g.gen > target.gen and g.volumes.get("_from_gen") == target.gen),
               key=lambda g: g.gen, default=None)


def history(store: Store, container: str) -> list[dict[str, Any]]:
    """Generations plus every attempt (committed, rolled back) on the container,
    a compose stack's that it was a member of included."""
    ensure(store)
    gens = generations(store, container)
    attempts = store.db.execute(
        "SELECT * FROM upgrade_journal WHERE container = ? OR EXISTS (SELECT 1 FROM"
        " json_each(upgrade_journal.plan, '$.members') WHERE value = ?) ORDER BY started",
        (container, container),
    ).fetchall()
    out: list[dict[str, Any]] = []
    for g in gens:
        out.append({"type": "generation", **g.to_json()})
    for a in attempts:
        out.append({
            "type": a["kind"], "id": a["id"], "state": a["state"], "from": a["from_image"],
            "to": a["to_image"], "started": a["started"], "finished": a["finished"],
            "error": a["error"], "timings": json.loads(a["timings"]) if a["timings"] else {},
        })
    return out


@dataclass(frozen=True)
class StepRow:
    """One journaled step: its data (``kind``, ``args``), how far it got, and
    what its ``apply`` returned for the undo."""

    idx: int
    kind: str
    args: dict[str, Any]
    state: str                      # pending | applying | applied | undone
    undo: dict[str, Any]

    @property
    def started(self) -> bool:
        return self.state in ("applying", "applied")


class Journal:
    """One transaction's journal rows."""

    def __init__(self, store: Store, jid: str) -> None:
        self.store = store
        self.id = jid

    @classmethod
    def begin(cls, store: Store, *, container: str, kind: str, from_image: str, to_image: str,
              plan: dict[str, Any], steps: list[tuple[str, dict[str, Any]]],
              jid: str | None = None, no_return: int | None = None) -> Journal:
        ensure(store)
        jid = jid or new_id()
        with store.transaction() as db:
            db.execute(
                "INSERT INTO upgrade_journal (id, container, kind, state, from_image, to_image,"
                " plan, started, no_return) VALUES (?, ?, ?, 'begun', ?, ?, ?, ?, ?)",
                (jid, container, kind, from_image, to_image, json.dumps(plan), time.time(),
                 no_return),
            )
            for i, (k, args) in enumerate(steps):
                db.execute(
                    "INSERT INTO upgrade_steps (journal_id, idx, kind, args, state)"
                    " VALUES (?, ?, ?, ?, 'pending')",
                    (jid, i, k, json.dumps(args)),
                )
        return cls(store, jid)

    def step_state(self, idx: int, state: str, undo: dict[str, Any] | None = None) -> None:
        with self.store.transaction() as db:
            if undo is None:
                db.execute("UPDATE upgrade_steps SET state = ? WHERE journal_id = ? AND idx = ?",
                           (state, self.id, idx))
            else:
                db.execute(
                    "UPDATE upgrade_steps SET state = ?, undo = ? WHERE journal_id = ? AND idx = ?",
                    (state, json.dumps(undo), self.id, idx),
                )

    def steps(self) -> list[StepRow]:
        rows = self.store.db.execute(
            "SELECT * FROM upgrade_steps WHERE journal_id = ? ORDER BY idx", (self.id,)
        ).fetchall()
        return [StepRow(idx=r["idx"], kind=r["kind"], args=json.loads(r["args"]), state=r["state"],
                        undo=json.loads(r["undo"]) if r["undo"] else {}) for r in rows]

    def row(self) -> sqlite3.Row:
        return self.store.db.execute("SELECT * FROM upgrade_journal WHERE id = ?", (self.id,)).fetchone()

    def plan(self) -> dict[str, Any]:
        plan: dict[str, Any] = json.loads(self.row()["plan"])
        return plan

    def finish(self, state: str, *, error: str | None = None, timings: dict[str, float] | None = None,
               report: dict[str, Any] | None = None, db: sqlite3.Connection | None = None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE upgrade_journal SET state = ?, error = ?, timings = ?,"
                " report = COALESCE(?, report), finished = ? WHERE id = ?",
                (state, error, json.dumps(timings or {}),
                 json.dumps(report) if report is not None else None, time.time(), self.id),
            )

        if db is not None:
            write(db)
        else:
            with self.store.transaction() as conn:
                write(conn)

    def done(self) -> None:
        """The post-commit work is finished (idempotent)."""
        with self.store.transaction() as db:
            db.execute("UPDATE upgrade_journal SET state = 'done' WHERE id = ? AND state = 'committed'",
                       (self.id,))

    def discard(self) -> None:
        """Forget the run (a rehearsal leaves nothing behind, not even history)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM upgrade_steps WHERE journal_id = ?", (self.id,))
            db.execute("DELETE FROM upgrade_journal WHERE id = ?", (self.id,))


def members(row: sqlite3.Row) -> list[str]:
    """The containers a journal changes: its own, and for a run that spans
    several containers (a compose stack's, upgrade/group.py) those its plan
    lists as ``members``.  Recovery takes every one's lock."""
    listed = json.loads(row["plan"]).get("members") or []
    return list(dict.fromkeys([row["container"], *map(str, listed)]))


def pending(store: Store) -> list[sqlite3.Row]:
    """Journals a crash left open: ``begun`` (undo) or ``committed`` (finish)."""
    ensure(store)
    return store.db.execute(
        "SELECT * FROM upgrade_journal WHERE state IN ('begun', 'committed') ORDER BY started"
    ).fetchall()
