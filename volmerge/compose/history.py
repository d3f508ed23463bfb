"""Stack generations: what each ``compose upgrade`` did, for ``compose
history`` and ``compose rollback``.

One row per stack upgrade in the ``compose_generations`` table (component
``compose`` of the state database): the project, its generation number, the
services it upgrades with each one's container generation before (and
after), and its state.  The row is written ``in-progress``, durably, before
the first service changes, and becomes ``current`` after the last one
committed: a row still ``in-progress`` after a crash tells ``compose
recover`` which services to put back (every one whose container generation
is no longer the one it had), so the whole stack ends on one generation.
The per-container generations and journals stay the upgrade's own
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

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "generation": self.gen, "state": self.state,
                "created": self.created, "services": [asdict(s) for s in self.services]}


def _ensure(store: Any) -> None:
    store.ensure_schema(COMPONENT, MIGRATIONS)


def current_gen(store: Any, container: str) -> int | None:
    """The container's current upgrade generation (None before its first upgrade)."""
    from volmerge.upgrade import generations

    cur = [g.gen for g in generations(store, container) if g.state == "current"]
    return cur[-1] if cur else None


def begin(store: Any, project: str, services: list[ServiceStep]) -> int:
    """A new stack generation, ``in-progress``, on disk before anything changes."""
    _ensure(store)
    with store.transaction() as conn:
        (last,) = conn.execute("SELECT COALESCE(MAX(gen), 0) FROM compose_generations "
                               "WHERE project = ?", (project,)).fetchone()
        conn.execute("INSERT INTO compose_generations(project, gen, services, state, created) "
                     "VALUES (?, ?, ?, 'in-progress', ?)",
                     (project, last + 1, json.dumps([asdict(s) for s in services]), time.time()))
    return int(last) + 1


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
                            r["state"], r["created"]) for r in rows]
