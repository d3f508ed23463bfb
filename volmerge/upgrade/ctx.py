"""What the upgrade needs from the product's wiring, as a type.

Every function of the upgrade takes ``ctx``: the store and the four services
built on it.  :class:`volmerge.context.Context` provides them (and so does any
test double with these attributes); the types are imported for the type
checker only, so nothing here costs start-up time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from volmerge.runtime.containers import Engine
    from volmerge.runtime.images import ImageStore
    from volmerge.runtime.network.manager import NetworkManager
    from volmerge.runtime.store import Store

    from ..volumes.manager import VolumeManager


class Ctx(Protocol):
    """The store, the container engine, the image store, the volume manager
    and the network manager of one volmerge store root."""

    @property
    def store(self) -> Store: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def images(self) -> ImageStore: ...

    @property
    def volumes(self) -> VolumeManager: ...

    @property
    def network(self) -> NetworkManager: ...
