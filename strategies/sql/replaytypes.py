"""The values every replay backend shares: the progress callback, the
result, the cores to use.  A leaf: it imports nothing of this package, so
the backends (replay_sqlite, replay_pg, pgstage, dumpwrite) and the
dispatcher (replay) can all import it without importing each other
(pyproject.toml's import-linter contract keeps it so)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
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

    @classmethod
    def of(cls, out: dict[str, Any]) -> ReplayResult:
        """From a backend's result dict."""
        return cls(out["dst"], out["tables"], out["seconds"], bool(out["verified"]),
                   dict(out.get("phases") or {}), bool(out.get("source_changed")))
