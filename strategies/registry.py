"""The strategy registry: every strategy, built-in or third-party, comes from
the entry-point group ``volmerge.strategies`` (architecture.md, principle 7).

An entry point that fails to load (missing module, import error, a class that
does not satisfy the protocol) is recorded in :func:`load_errors` and left
out; it never breaks the other strategies or the command line.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .errors import BadInput

GROUP = "volmerge.strategies"


@dataclass
class Registered:
    name: str
    value: str  # "module:attr" as declared
    distribution: str
    strategy: Any = None
    error: str | None = None

    @property
    def description(self) -> str:
        doc = (type(self.strategy).__doc__ or "") if self.strategy is not None else ""
        return doc.strip().split("\n")[0] if doc else ""


_lock = threading.Lock()
_cache: dict[str, Registered] | None = None


def _load() -> dict[str, Registered]:
    importlib.invalidate_caches()
    found: dict[str, Registered] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:  # first distribution on sys.path wins, like importlib does
            continue
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        reg = Registered(ep.name, ep.value, dist)
        try:
            obj = ep.load()
            inst = obj() if callable(obj) else obj
            if not getattr(inst, "name", None):
                inst.name = ep.name
            if not callable(getattr(inst, "handles", None)) or not (
                callable(getattr(inst, "merge", None)) or callable(getattr(inst, "merge_files", None))
            ):
                raise TypeError("has neither merge() nor merge_files() with handles()")
            reg.strategy = inst
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            reg.error = f"{type(exc).__name__}: {exc}".split("\n")[0]
        found[ep.name] = reg
    return found


def registry(refresh: bool = False) -> dict[str, Registered]:
    """Every entry point of the group, loaded or not (``.error`` says why)."""
    global _cache
    with _lock:
        if _cache is None or refresh:
            _cache = _load()
        return _cache


def refresh() -> None:
    """Forget what was loaded (after installing or removing a plugin)."""
    registry(refresh=True)


def all_strategies() -> dict[str, Any]:
    """name -> strategy instance, for every entry point that loaded."""
    return {n: r.strategy for n, r in registry().items() if r.strategy is not None}


def load_errors() -> dict[str, str]:
    """name -> one-line reason, for every entry point that failed to load."""
    return {n: r.error for n, r in registry().items() if r.error is not None}


def get_strategy(name: str) -> Any:
    """The strategy registered as ``name``; BadInput when it is unknown or broken."""
    reg = registry().get(name)
    if reg is None:
        known = ", ".join(sorted(registry())) or "none"
        raise BadInput(f"unknown merge strategy {name!r} (registered: {known})")
    if reg.strategy is None:
        raise BadInput(f"merge strategy {name!r} failed to load: {reg.error}")
    return reg.strategy


def find_strategy(name: str) -> Any | None:
    """Like get_strategy but None when missing or broken (detection uses it)."""
    reg = registry().get(name)
    return reg.strategy if reg is not None else None
