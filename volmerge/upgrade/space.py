"""Room for an upgrade, estimated before it stops the service.

A full disk mid-merge rolls back cleanly (runtime.diskspace), but only
after the service was stopped and started again.  The plan therefore
estimates what the merge writes into the new live layers: for each regular
file of the new image at a volume's target, the larger of its size and the
size of the same path in the volume's layers (a merged file or a replayed
database lands in the new upper layer whole; files only the volume has stay
where they are), plus a margin for the journal, the state database and the
new container's layer.  ``upgrade`` refuses (exit 2) when the store's file
system has less free; ``--dry-run`` shows the figure.  It is an estimate: a
replay may write a database smaller or larger than the one it replaces.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volmerge.runtime import fsutil
from volmerge.runtime.diskspace import size_text, space_of

from ..errors import BadInput

MARGIN = 1 << 20  # the journal, the state database, the new container's layer


@dataclass(frozen=True)
class SpaceEstimate:
    needed: int
    free: int
    filesystem: str
    fstype: str

    @property
    def enough(self) -> bool:
        return self.needed <= self.free

    def describe(self) -> str:
        return (f"~{size_text(self.needed)} needed on {self.filesystem} ({self.fstype}), "
                f"{size_text(self.free)} free")

    def to_json(self) -> dict[str, Any]:
        return {"needed": self.needed, "free": self.free, "filesystem": self.filesystem,
                "type": self.fstype, "enough": self.enough}


def volume_bytes(theirs: Path, layers: list[Path]) -> int:
    """What the merge may write for one volume (see the module's docstring)."""
    sizes = _regular_sizes(theirs)
    for layer in layers:
        for rel, n in _regular_sizes(layer).items():
            if n > sizes.get(rel, n):
                sizes[rel] = n
    return sum(sizes.values())


def estimate(store_root: Path, written: int) -> SpaceEstimate:
    """The estimate for ``written`` bytes into the volumes of the store at ``store_root``."""
    fs = space_of(store_root / "volumes")
    if fs is None:
        return SpaceEstimate(written + MARGIN, 0, str(store_root), "?")
    return SpaceEstimate(written + MARGIN, fs.free, fs.mount_point, fs.fstype)


def check(space: SpaceEstimate | None, container: str) -> None:
    """Refuse, before anything is stopped, an upgrade the disk cannot hold."""
    if space is not None and not space.enough:
        raise BadInput(f"not enough space to upgrade {container}: {space.describe()}; "
                       f"nothing was stopped: free ~{size_text(space.needed - space.free)} "
                       "and run the command again")


def _regular_sizes(top: Path) -> dict[str, int]:
    """Relative path -> size of every regular file below ``top`` (never
    following a symlink: a volume's content is not trusted)."""
    return {e.rel: e.st.st_size for e in fsutil.walk(top) if stat.S_ISREG(e.st.st_mode)}
