"""Room for an upgrade, estimated before it stops the service.

A full disk mid-merge rolls back cleanly (runtime.diskspace), but only
after the service was stopped and started again.  The plan therefore
estimates what the merge writes into the new live layers: for each regular
file of the new image at a volume's target, the larger of its size and the
size of the same path in the volume's layers (a merged file or a replayed
database lands in the new upper layer whole; files only the volume has stay
where they are), plus a margin for the journal, the state database and the
new container's layer.  A volume holding a PostgreSQL data directory the
new image cannot run as is (its major version's programs are not in the
image at /usr/lib/postgresql/N) counts twice the data directory more: the
major upgrade works on a copy of it and writes a second one beside it.
``upgrade`` refuses (exit 2) when the store's file system has less free;
``--dry-run`` shows the figure.  It is an estimate: a replay may write a
database smaller or larger than the one it replaces.
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


def volume_bytes(theirs: Path, layers: list[Path], target: str | None = None) -> int:
    """What the merge may write for one volume mounted at ``target`` (see the
    module's docstring)."""
    sizes = _regular_sizes(theirs)
    ours: dict[str, int] = {}
    for layer in layers:
        for rel, n in _regular_sizes(layer).items():
            ours[rel] = max(n, ours.get(rel, 0))
            if n > sizes.get(rel, n):
                sizes[rel] = n
    written = sum(sizes.values())
    if target is not None and _pg_major(theirs, target, layers):
        written += 2 * sum(ours.values())
    return written


def _pg_major(theirs: Path, target: str, layers: list[Path]) -> bool:
    """Whether the volume is a PostgreSQL data directory of a major version
    the new image (whose content at ``target`` is ``theirs``) has no
    /usr/lib/postgresql/N of."""
    version = None
    for layer in reversed(layers):  # the top layer's wins
        f = layer / "PG_VERSION"
        if not f.is_symlink() and f.is_file():
            try:
                version = f.read_text(encoding="ascii", errors="replace").strip()
            except OSError:
                return False
            break
    if not version or not version.split(".")[0].isdigit():
        return False
    depth = len(Path(target).relative_to("/").parts)
    if depth < 1 or depth > len(theirs.parents):
        return False
    pg = theirs.parents[depth - 1] / "usr" / "lib" / "postgresql" / version
    return pg.is_symlink() or not pg.is_dir()


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
