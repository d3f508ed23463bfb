"""What a snapshot needs to reach a running container (its pid, pause,
resume): ``ContainerHooks``, and ``engine_hooks`` that takes them from the
runtime engine (runtime.containers.Engine)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class ContainerHooks:
    """What the volume manager needs from the container engine to snapshot a
    volume that a running container uses."""

    pid_of: Callable[[str], int | None]
    pause: Callable[[str], None]
    resume: Callable[[str], None]
    name_of: Callable[[str], str] = lambda cid: cid[:12]


def engine_hooks(engine: Any) -> ContainerHooks:
    from volmerge.runtime.errors import NotFound

    def pid_of(cid: str) -> int | None:
        try:
            c = engine.get(cid)
        except NotFound:  # the container is gone: it has no mount to swap
            return None
        return c.pid if getattr(c, "state", None) in ("running", "paused") and c.pid else None

    def name_of(cid: str) -> str:
        try:
            return str(engine.get(cid).name)
        except NotFound:
            return cid[:12]

    # Attribute lookups happen at call time, so ``engine`` may be a lazy
    # stand-in that is only built when a hook is actually used.
    return ContainerHooks(pid_of=pid_of, pause=lambda cid: engine.pause(cid),
                          resume=lambda cid: engine.unpause(cid, missing_ok=True), name_of=name_of)
