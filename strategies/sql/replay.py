"""``replay(plan, dst)``: execute a plan into a SQLite file, a PostgreSQL
database or a .sql dump file; nothing is left behind on failure.

The backend is chosen by the destination's kind and imported only then
(each one imports the shared values from :mod:`.replaytypes`, never this
module).  The plan is only read: what a backend needs besides it (the
dump's dialect) is passed as an argument."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .replaytypes import Progress, ReplayResult, cpus

if TYPE_CHECKING:
    from .plan import ReplayPlan

__all__ = ["Progress", "ReplayResult", "cpus", "dst_kind", "replay"]


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
        from .replay_sqlite import replay_sqlite

        return ReplayResult.of(replay_sqlite(plan, dst, progress))
    if kind == "postgres":
        from .replay_pg import replay_pg

        return ReplayResult.of(replay_pg(plan, dst, progress))
    from .dumpwrite import replay_dump

    dialect = plan.to_dialect if plan.to_dialect in ("sqlite", "postgres") else "sqlite"
    return ReplayResult.of(replay_dump(plan, dst, dialect, progress))
