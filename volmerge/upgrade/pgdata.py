"""PostgreSQL data directories across major versions (issue 6 item 7).

A volume whose root holds a PostgreSQL data directory (``PG_VERSION``)
cannot be file-merged: the new major version cannot read the old one's
files.  ``maybe_upgrade`` is called by the upgrade's merge before the tree
merge; it returns None when the volume is not such a data directory (or the
major version does not change), else it writes the new data directory into
``out`` (an overlay upper over ``ours``) and returns a tree-merge-shaped
report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pg_version(path: Path) -> str | None:
    try:
        return (Path(path) / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


def maybe_upgrade(ctx: Any, *, old_image: Any, new_image: Any, volume: str, target: str,
                  ours: Path, theirs: Path | None, out: Path, dry_run: bool) -> dict[str, Any] | None:
    """None: not a PostgreSQL data directory changing major version."""
    if pg_version(ours) is None:
        return None
    return None  # major-version replay through the runtime: not wired yet
