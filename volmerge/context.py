"""The product's wiring: one store, and the engine with volmerge's layered
volumes and the network manager plugged in.

The engine gets the volume and network managers as lazy stand-ins
(:class:`_Lazy`): each is built, with its crash recovery, schema check and
imports, the first time the engine actually uses it — a container with a
volume, a bridge network, a ``ps`` that shows addresses.  A
``run --rm --network none`` without volumes builds neither (~10 ms).

``supervised`` is the *factory* handed to container supervisors
(``Engine(factory="volmerge.context:supervised")``): the engine's records and
bundles with the same volume and network providers as the CLI, so that a
supervisor restarting a container uses them, without the engine itself
(runtime.containers, runtime.lifecycle), which a supervisor does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

FACTORY = "volmerge.context:supervised"


class _Lazy:
    """Stands in for an object built on first attribute access (the same
    instance as the Context's own property, so there is only ever one)."""

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def __getattr__(self, name: str) -> Any:
        return getattr(self._build(), name)

    def __repr__(self) -> str:
        return f"<lazy {self._build!r}>"


class Context:
    def __init__(self, store: Any) -> None:
        self.store = store

    @cached_property
    def images(self) -> Any:
        from volmerge.runtime.images import ImageStore

        return ImageStore(self.store)

    @cached_property
    def network(self) -> Any:
        from volmerge.runtime.network import NetworkManager

        return NetworkManager(self.store)

    @cached_property
    def volumes(self) -> Any:
        from volmerge.volumes import VolumeManager
        from volmerge.volumes.hooks import engine_hooks

        # The hooks reach the engine lazily: the engine itself needs the volumes.
        return VolumeManager(self.store, hooks=engine_hooks(_Lazy(lambda: self.engine)))

    @cached_property
    def engine(self) -> Any:
        from volmerge.runtime.containers import Engine

        return Engine(self.store, volumes=_Lazy(lambda: self.volumes),
                      network=_Lazy(lambda: self.network), factory=FACTORY)


def make_engine(store: Any) -> Any:
    return Context(store).engine


def supervised(store: Any) -> Any:
    """What a container's supervisor uses of the engine (runtime.supervisor.parts):
    its ``records`` and ``bundles``, with the volume and network managers
    built on first use as the engine's are."""
    from types import SimpleNamespace

    from volmerge.runtime.bundle import Bundles
    from volmerge.runtime.records import ContainerRecords

    ctx = Context(store)
    records = ContainerRecords(store)
    bundles = Bundles(store, records, _Lazy(lambda: ctx.volumes), _Lazy(lambda: ctx.network))
    return SimpleNamespace(records=records, bundles=bundles)
