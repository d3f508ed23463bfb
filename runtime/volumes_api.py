"""How the runtime gets named volumes: an interface the volume manager fills in.

The engine asks a provider for a host directory to bind-mount at the
container's mount path.  runtime ships :class:`PlainDirVolumes` (a plain
directory in the store, seeded by copy); volmerge passes its layered volume
manager (volmerge.volumes), which satisfies the same protocol.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from . import fsutil, incomplete
from .errors import NotDone


@runtime_checkable
class VolumeProvider(Protocol):
    def attach(self, name: str, container_id: str, seed: Path | None, *,
               readonly: bool = False, anonymous: bool = False) -> Path:
        """Return a host directory holding volume ``name`` for the container.

        If the volume does not exist yet it is created and, when ``seed`` is
        an existing directory (the image's content at the mount path, read
        through the container's root file system), seeded from it; that
        content is recorded as the volume's seed layer.  ``anonymous``: made
        for an image ``VOLUME`` nobody mounted, so :meth:`discard` may
        remove it with a ``--rm`` container."""
        ...

    def detach(self, name: str, container_id: str) -> None:
        """The container no longer uses the volume (stopped or removed)."""
        ...

    def discard(self, name: str, container_id: str) -> None:
        """Remove the volume if it was made anonymous for this container and
        nothing else uses it (``run --rm``, as Docker removes anonymous
        volumes); otherwise leave it."""
        ...


class PlainDirVolumes:
    """The fallback provider: ``<root>/volumes/<name>/_data``, seeded by copy."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def attach(self, name: str, container_id: str, seed: Path | None, *,
               readonly: bool = False, anonymous: bool = False) -> Path:
        d = self.root / "volumes" / name / "_data"
        if not d.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            incomplete.sweep(d.parent, prefix=d.name)  # what a crashed seeding left
            with incomplete.building(d.parent, d.name, 0o755) as tmp:
                if seed is not None and seed.is_dir() and not seed.is_symlink():
                    try:
                        fsutil.copy_tree(seed, tmp)  # iterative: shutil.copytree recurses
                    except OSError as exc:
                        raise NotDone(f"seeding volume {name}: {exc.strerror or exc}") from None
                os.rename(tmp, d)
        return d

    def detach(self, name: str, container_id: str) -> None:
        return None

    def discard(self, name: str, container_id: str) -> None:
        return None  # plain directories record no creator: they stay
