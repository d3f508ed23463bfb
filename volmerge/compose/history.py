"""Stack generations: what each ``compose upgrade`` did, for ``compose
history`` and ``compose rollback``.

One row per stack upgrade in the ``compose_generations`` table (component
``compose`` of the state database): the project, its generation number, the
services it upgrades with each one's container generation before (and
after), its state, and the id of the one journal that upgrades the whole
stack (volmerge/upgrade/group.py; ``rollback_journal``: the one of its
``compose rollback``).  The row is written ``in-progress``, durably, just
before that journal begins; the journal decides: once ``volmerge recover``
(or the live run) has finished or undone it, :func:`settle` reads the
outcome into the row (``current``, ``failed``, ``rolled-back``).  The
per-container generations stay the upgrade's own
(volmerge/upgrade/journal.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

COMPONENT = "compose"
MIGRATIONS = [
    """
    CREATE TABLE compose_generations (
        project   TEXT NOT NULL,
        gen       INTEGER NOT NULL,
        services  TEXT NOT NULL,            -- JSON: [ServiceStep, ...] in upgrade order
        state     TEXT NOT NULL,            -- in-progress | current | rolled-back | failed
        created   REAL NOT NULL,
        PRIMARY KEY (project, gen)
    );
    """,
    # the stack's one journal (upgrade/group.py), and that of its rollback
    """
    ALTER TABLE compose_generations ADD COLUMN journal_id TEXT;
    ALTER TABLE compose_generations ADD COLUMN rollback_journal TEXT;
    """,
]


@dataclass(frozen=True)
class ServiceStep:
    """One service of a stack upgrade: its container and generations."""

    service: str
    container: str
    from_image: str
    to_image: str
    from_gen: int | None     # None: the container had no recorded generation yet
    to_gen: int | None       # None until the service committed


@dataclass(frozen=True)
class StackGeneration:
    project: str
    gen: int
    services: tuple[ServiceStep, ...]
    state: str
    created: float
    journal_id: str | None = None
    rollback_journal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "generation": self.gen, "state": self.state,
                "created": self.created, "services": [asdict(s) for s in self.services],
                "journal": self.journal_id}


def _ensure(store: Any) -> None:
    store.ensure_schema(COMPONENT, MIGRATIONS)


def current_gen(store: Any, container: str) -> int | None:
    """The container's current upgrade generation (None before its first upgrade)."""
    from volmerge.upgrade import generations

    cur = [g.gen for g in generations(store, container) if g.state == "current"]
    return cur[-1] if cur else None


def begin(store: Any, project: str, services: list[ServiceStep],
          journal_id: str | None = None) -> int:
    """A new stack generation, ``in-progress``, on disk before anything changes."""
    _ensure(store)
    with store.transaction() as conn:
        (last,) = conn.execute("SELECT COALESCE(MAX(gen), 0) FROM compose_generations "
                               "WHERE project = ?", (project,)).fetchone()
        conn.execute("INSERT INTO compose_generations(project, gen, services, state, created,"
                     " journal_id) VALUES (?, ?, ?, 'in-progress', ?, ?)",
                     (project, last + 1, json.dumps([asdict(s) for s in services]), time.time(),
                      journal_id))
    return int(last) + 1


def rolling_back(store: Any, project: str, gen: int, journal_id: str) -> None:
    """The journal of the stack rollback about to begin (written before it)."""
    _ensure(store)
    with store.transaction() as conn:
        conn.execute("UPDATE compose_generations SET rollback_journal = ? "
                     "WHERE project = ? AND gen = ?", (journal_id, project, gen))


def _journal_state(store: Any, jid: str | None) -> str | None:
    if jid is None:
        return None
    try:
        row = store.db.execute("SELECT state FROM upgrade_journal WHERE id = ?",
                               (jid,)).fetchone()
    except Exception:  # noqa: BLE001 - no journal table yet: no journal
        return None
    return row[0] if row else None


def _to_gen(store: Any, part_jid: str) -> int | None:
    row = store.db.execute("SELECT gen FROM generations WHERE journal_id = ?",
                           (part_jid,)).fetchone()
    return int(row[0]) if row else None


def settle(store: Any, project: str) -> list[tuple[int, str]]:
    """Read the outcome of each journal the rows still wait for (a crash cut
    the run short; ``volmerge recover`` has finished or undone the journal
    since) into the rows: an upgrade committed is ``current`` with its
    services' new generations, one undone (or never begun) ``failed``; a
    rollback committed makes its generation ``rolled-back``.  Rows whose
    journal is still open are left alone.  The (generation, state) settled."""
    out = []
    for g in generations(store, project):
        if g.state == "in-progress" and g.journal_id is not None:
            js = _journal_state(store, g.journal_id)
            if js in ("begun", "committed"):
                continue
            if js == "done":
                parts = _parts(store, g.journal_id)
                finish(store, project, g.gen, [
                    ServiceStep(s.service, s.container, s.from_image, s.to_image, s.from_gen,
                                _to_gen(store, parts.get(s.container, ""))) for s in g.services])
                out.append((g.gen, "current"))
            else:
                mark(store, project, g.gen, "failed")
                out.append((g.gen, "failed"))
        elif g.state == "current" and g.rollback_journal is not None:
            if _journal_state(store, g.rollback_journal) == "done":
                mark(store, project, g.gen, "rolled-back")
                out.append((g.gen, "rolled-back"))
    return out


def _parts(store: Any, jid: str) -> dict[str, str]:
    """The per-container journal ids of a stack journal's upgrade parts."""
    row = store.db.execute("SELECT plan FROM upgrade_journal WHERE id = ?", (jid,)).fetchone()
    if row is None:
        return {}
    return {p["container"]: p["plan"]["id"] for p in json.loads(row[0]).get("parts", [])}


def finish(store: Any, project: str, gen: int, services: list[ServiceStep]) -> None:
    _ensure(store)
    with store.transaction() as conn:
        conn.execute("UPDATE compose_generations SET state = 'current', services = ? "
                     "WHERE project = ? AND gen = ?",
                     (json.dumps([asdict(s) for s in services]), project, gen))


def mark(store: Any, project: str, gen: int, state: str) -> None:
    _ensure(store)
    with store.transaction() as conn:
        conn.execute("UPDATE compose_generations SET state = ? WHERE project = ? AND gen = ?",
                     (state, project, gen))


def generations(store: Any, project: str) -> list[StackGeneration]:
    _ensure(store)
    rows = store.db.execute("SELECT * FROM compose_generations WHERE project = ? ORDER BY gen",
                            (project,)).fetchall()
    return [StackGeneration(r["project"], r["gen"],
                            tuple(ServiceStep(**s) for s in json.loads(r["services"])),
                            r["state"], r["created"], r["journal_id"], r["rollback_journal"])
            for r in rows]
