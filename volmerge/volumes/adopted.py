"""A volume made from data that lived elsewhere (``volmerge adopt``): the
image's content at the mount path as its seed — the base of the next
three-way merge — and the data as one generation above it.

The data layer shows exactly the data, whatever the seed holds: a seed entry
the data lacks gets a whiteout, and a directory both have is marked opaque,
so nothing of the seed shows through below it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from volmerge.runtime import overlayfmt

from ..errors import BadInput, Conflict
from .model import Generation, Manifest, check_name, new_id
from .tree import copy_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .manager import VolumeManager


def create_from(vm: VolumeManager, name: str, data: Path, seed: Path | None,
                labels: dict[str, str] | None = None) -> None:
    """A new volume ``name`` whose merged view is the tree ``data`` and whose
    seed (and base) is the tree ``seed`` (None: empty).  Conflict when it
    exists; nothing is left behind when it fails."""
    check_name(name)
    for what, tree in (("data", data), ("seed", seed)):
        if tree is not None and (tree.is_symlink() or not tree.is_dir()):
            raise BadInput(f"{what} {tree} is not a directory")
    pool = vm.pool
    with pool.volume_lock(name):
        if pool.exists(name):
            raise Conflict(f"volume {name!r} already exists")
        with contextlib.ExitStack() as stack:
            built_seed = None
            if seed is not None:
                built_seed = stack.enter_context(pool.building("vol-seed-"))
                copy_tree(seed, built_seed / "diff")
            built_data = stack.enter_context(pool.building("vol-adopt-"))
            copy_tree(data, built_data / "diff")
            if seed is not None:
                overlayfmt.shadow(built_data / "diff", seed)
            with pool.commit_lock():
                seed_id = pool.adopt(built_seed) if built_seed else pool.new_layer(live=False)
                data_id = pool.adopt(built_data)
                m = Manifest(name=name, seed=seed_id, base=seed_id,
                             live=pool.new_layer(live=True, like=data_id),
                             generations=[Generation(new_id(6), data_id, None)],
                             labels=dict(labels or {}))
                pool.write(m)
