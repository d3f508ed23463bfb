"""What a tree merge reports: every path decided, the counts, the diffs of a
dry run; and the error a merge that stops on a conflict raises with it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .base import ACTIONS, FileReport
from .errors import NotDone


@dataclass
class TreeReport:
    files: list[FileReport] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    diffs: dict[str, str] = field(default_factory=dict)
    written: bool = False
    dry_run: bool = False
    mode: str = "full"
    paths_written: int = 0

    @property
    def conflicts(self) -> list[FileReport]:
        """Files left with an unresolved conflict (not written, or written with markers)."""
        return [f for f in self.files if f.action == "conflict"]

    @property
    def summary(self) -> dict[str, int]:
        s: dict[str, int] = {"conflicts": len(self.conflicts)}
        s["resolved"] = sum(1 for f in self.files if f.conflicts and f.action != "conflict")
        for a in ACTIONS:
            s[a] = self.counts.get(a, 0)
        s["written"] = self.paths_written
        return s

    @property
    def sql(self) -> list[FileReport]:
        return [f for f in self.files if f.strategy == "sql"]

    def to_json(self) -> dict[str, Any]:
        files = []
        for f in self.files:
            d = f.to_json()
            if f.path in self.diffs:
                d["diff"] = self.diffs[f.path]
            files.append(d)
        return {"summary": self.summary, "files": files, "sql": [f.to_json() for f in self.sql],
                "written": self.written, "dry_run": self.dry_run, "mode": self.mode}


class MergeConflict(NotDone):
    """Conflicts with on_conflict='fail': nothing was written.  ``report``
    holds every conflict."""

    def __init__(self, report: TreeReport) -> None:
        n = len(report.conflicts)
        paths = ", ".join(f.path for f in report.conflicts[:3]) + (", ..." if n > 3 else "")
        super().__init__(f"{n} conflict{'s' if n != 1 else ''} ({paths}); nothing written "
                         "(choose --on-conflict ours|theirs|markers|keep-both or a policy rule)")
        self.report = report
