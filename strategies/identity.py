"""The identities every strategy must honour (the conformance suite checks
them): nothing changed -> unchanged; one side changed -> that side exactly;
both made the same change -> that change."""

from __future__ import annotations

from .base import FileReport, MergeResult


def trivial_merge(strategy: str, path: str, base: bytes | None, ours: bytes,
                  theirs: bytes) -> MergeResult | None:
    """The result when no real merge is needed, else None."""
    if ours == theirs:
        notes = [] if base == ours else ["same change on both sides"]
        return MergeResult(ours, FileReport(path, "unchanged", strategy, notes=notes))
    if base is not None and base == theirs:
        return MergeResult(ours, FileReport(path, "unchanged", strategy))
    if base is not None and base == ours:
        return MergeResult(theirs, FileReport(path, "took-theirs", strategy))
    return None


def is_text(sample: bytes) -> bool:
    """git's heuristic: a NUL byte in the first 8000 bytes means binary."""
    return b"\0" not in sample[:8000]
