"""Values of the volume store: names, the per-volume manifest, snapshots, changes.

A volume is described by one JSON *manifest* (``volumes/<name>/manifest.json``),
written new-then-renamed with fsync.  The manifest is the whole truth: a
layer directory that no manifest names is garbage, a volume directory without
a manifest does not exist.  That makes every operation's commit point one
atomic rename (or, for operations that change two volumes, one journal
record, see :mod:`volmerge.volumes.journal`).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import BadInput

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MAX_NAME = 128
#: point names that are not snapshot tags: the seed layer and the current state
SEED = "seed"
LIVE = "live"


def check_name(name: str, what: str = "volume name") -> str:
    """Docker's rule for names; anything else (``/``, ``..``, shell
    metacharacters, empty) is bad input."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise BadInput(
            f"invalid {what} {name!r}: use letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit, at most {MAX_NAME} characters)"
        )
    return name


def check_tag(tag: str) -> str:
    check_name(tag, "snapshot tag")
    if tag in (SEED, LIVE):
        raise BadInput(f"invalid snapshot tag {tag!r}: {SEED!r} and {LIVE!r} are reserved")
    return tag


def new_id(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


@dataclass
class Generation:
    """A frozen layer in a volume's stack; ``id`` is the snapshot id."""

    id: str
    layer: str
    tag: str | None = None
    created: float = field(default_factory=time.time)


@dataclass
class Manifest:
    name: str
    seed: str  # layer id: what the image had when the volume was created
    base: str  # layer id: the base of the next three-way merge
    live: str  # layer id: the writable upper
    generations: list[Generation] = field(default_factory=list)  # bottom first
    labels: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # container id -> "rw" | "ro"
    created: float = field(default_factory=time.time)
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d["generations"] = [Generation(**g) for g in d.get("generations", [])]
        return cls(**d)

    # -- the layer stack --------------------------------------------------------
    def frozen_layers(self) -> list[str]:
        """Layer ids bottom first: the seed, then every generation."""
        return [self.seed] + [g.layer for g in self.generations]

    def layer_ids(self) -> set[str]:
        """Every layer the volume keeps alive (for garbage collection)."""
        return set(self.frozen_layers()) | {self.base, self.live}

    def find(self, point: str) -> int:
        """Index into ``generations`` of a snapshot tag or id; -1 for the seed."""
        if point == SEED:
            return -1
        for i in range(len(self.generations) - 1, -1, -1):
            g = self.generations[i]
            if g.tag == point or g.id == point:
                return i
        from ..errors import NotFound

        raise NotFound(f"volume {self.name!r} has no snapshot {point!r}")


@dataclass(frozen=True)
class Layer:
    id: str
    role: Literal["seed", "generation", "live", "base"]
    path: str
    size: int
    snapshot: str | None = None
    tag: str | None = None
    created: float | None = None
    shared: bool = False  # also used by another volume


@dataclass(frozen=True)
class Snapshot:
    volume: str
    id: str
    tag: str | None
    created: float
    layer: str
    compacted: bool = False  # an automatic compaction ran first


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: str  # the merged view while a container uses the volume
    created: float
    labels: dict[str, str]
    users: dict[str, str]
    snapshots: list[Snapshot]
    layers: list[Layer]  # bottom first, live last
    mounted: bool = False

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers if layer.role != "base")


@dataclass(frozen=True)
class Change:
    path: str
    kind: Literal["added", "modified", "deleted"]
    type: str = "file"  # file | dir | symlink | other
