"""ContainerHooks from the runtime engine (runtime.containers.Engine):
what a snapshot needs to reach a running container (its pid, pause, resume)."""

from __future__ import annotations

from typing import Any

from .manager import ContainerHooks


def engine_hooks(engine: Any) -> ContainerHooks:
    def pid_of(cid: str) -> int | None:
        try:
            c = engine.get(cid)
        except Exception:  # the container is gone: it has no mount to swap
            return None
        return c.pid if getattr(c, "state", None) in ("running", "paused") and c.pid else None

    def name_of(cid: str) -> str:
        try:
            return str(engine.get(cid).name)
        except Exception:
            return cid[:12]

    return ContainerHooks(pid_of=pid_of, pause=engine.pause, resume=engine.unpause, name_of=name_of)


def hooks_for_store(store: Any) -> ContainerHooks | None:
    """Hooks from the engine of this store, or None when it is not available."""
    try:
        from runtime.containers import Engine
    except ImportError:
        return None
    try:
        return engine_hooks(Engine(store))
    except Exception:
        return None
