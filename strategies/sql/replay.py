"""``replay(plan, dst)``: execute a plan into a SQLite file, a PostgreSQL
database or a .sql dump file; nothing is left behind on failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .plan import ReplayPlan

Progress = Callable[[str, int, int], None]  # (table, rows done, rows total)


def cpus() -> int:
    """The cores this process may run on (its affinity, not the machine's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class ReplayResult:
    dst: str
    tables: list[dict[str, Any]] = field(default_factory=list)  # table, rows, checksum, seconds
    seconds: float = 0.0
    verified: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (SQLite destinations)
    # a live SQLite source was written during the replay: it was done again
    # in one transaction (one snapshot of the source)
    source_changed: bool = False

    @property
    def rows(self) -> int:
        return sum(t.get("rows", 0) for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {"dst": self.dst, "verified": self.verified, "seconds": self.seconds,
                "rows": self.rows, "tables": self.tables, "phases": self.phases,
                "source_changed": self.source_changed}


def dst_kind(dst: str) -> str:
    if dst.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if dst.endswith(".sql") or dst.endswith(".dump"):
        return "dump"
    return "sqlite"


def replay(plan: ReplayPlan, dst: str, progress: Progress | None = None) -> ReplayResult:
    """Replay ``plan`` into ``dst``.  Raises NotDone (conflict, missing
    values, refused loss, constraint violation, verification mismatch) or
    BadInput; in every failure nothing is written."""
    kind = dst_kind(dst)
    if kind == "sqlite":
        plan.to_dialect = "sqlite"
        from .replay_sqlite import replay_sqlite

        out = replay_sqlite(plan, dst, progress)
    elif kind == "postgres":
        if plan.to_dialect != "postgres":
            plan.to_dialect = "postgres"
        from .replay_pg import replay_pg

        out = replay_pg(plan, dst, progress)
    else:
        from .dumpwrite import replay_dump

        out = replay_dump(plan, dst, progress)
    return ReplayResult(out["dst"], out["tables"], out["seconds"], bool(out["verified"]),
                        dict(out.get("phases") or {}), bool(out.get("source_changed")))
