"""Removing a container that no longer runs: its run undone
(Bundles.teardown), its address released, its socket holder ended, its
record deleted, its anonymous volumes discarded (``--rm``), its directory
and its lock file gone.

Shared by ``rm`` (runtime.lifecycle) and by the supervisor of a detached
``--rm`` container, which removes it once it exits on its own, as Docker's
``run -d --rm`` does (:func:`autoremove`); here rather than in
runtime.lifecycle so that a supervisor never imports the engine's side.
"""

from __future__ import annotations

from . import rootfs as rootfs_mod
from .errors import NotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from .bundle import Bundles
    from .records import Container, ContainerRecords


def remove_locked(records: ContainerRecords, bundles: Bundles, c: Container) -> None:
    """Remove ``c``, which does not run; the caller holds its lock."""
    store = bundles.store
    volumes = sorted({m["name"] for m in records.recorded_mounts(c) if m.get("kind") == "volume"})
    bundles.teardown(c)
    network = bundles.network
    if network is not None and c.options.network not in ("none", "host"):
        network.disconnect(c.id, release=True)  # the address is free again
    if c.options.socket_activate:  # its listening sockets close (runtime.sockholder)
        from . import sockholder

        sockholder.close(store.root, c.id)
    records.delete(c.id)
    if c.options.rm:  # as Docker's --rm: the anonymous volumes go with it
        for name in volumes:
            bundles.volumes.discard(name, c.id)
    rootfs_mod.discard_files(store, c.id)


def autoremove(records: ContainerRecords, bundles: Bundles, cid: str) -> bool:
    """A detached ``--rm`` container's supervisor, its exit recorded: remove
    the container, unless a stop was requested (``stop`` removes it itself
    once stopped; ``restart`` and an upgrade keep it) or it has started
    again, or gone, meanwhile.  Whether it was removed."""
    with bundles.store.lock("container-" + cid):
        try:
            c = records.lookup(cid)
        except NotFound:
            return False
        if c.live or c.state == "created" or c.stop_requested or not c.options.rm:
            return False
        remove_locked(records, bundles, c)
        return True
