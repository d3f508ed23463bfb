"""Container networking over netlink (pyroute2): bridge networks with IPAM,
veth pairs into persistent network namespaces, /etc/hosts kept current,
published ports and outbound NAT through one nftables table per store.

The engine's whole interface::

    nm = NetworkManager(store)
    att = nm.connect(container_id, network, hostname, ip=None, ports=[...], aliases=[])
    nm.disconnect(container_id, release=False)
    nm.takeover(old_container_id, new_container_id)
    nm.reconcile(alive)

pyroute2 is imported lazily (it costs ~120 ms), so importing this package is cheap.
"""

from __future__ import annotations

from .manager import DEFAULT_NETWORK, NetworkManager
from .model import Attachment, Lease, Network, PortSpec

__all__ = ["DEFAULT_NETWORK", "Attachment", "Lease", "Network", "NetworkManager", "PortSpec"]
