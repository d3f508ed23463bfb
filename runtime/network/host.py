"""What the network state looks like on the host, derived from the rows:
bridges, the nft table of published ports and NAT, the hosts files; and the
netlink socket the steps of one operation share.

Names on the host carry the store's tag (``volmerge:<tag>:...`` link
aliases, ``vmh-<hash>`` veths), so two stores on one host never take each
other's links for strays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..digest import sha256_hex
from ..store import Store
from . import hosts, ports
from .model import Network, PortSpec
from .rows import NetworkRows


class Host:
    """The host side of one store's networks."""

    def __init__(self, store: Store, rows: NetworkRows) -> None:
        self.store = store
        self.rows = rows
        root = str(store.root)
        self.tag = sha256_hex(root.encode())[:8]
        self.table = ports.table_name(root)
        self.ns_dir = store.path("network", "ns")
        self.hosts_dir = store.path("network", "hosts")
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        self._ipr: Any = None  # one netlink socket per locked operation
        self._depth = 0

    # -- the netlink socket ------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The network lock (every change, across processes) and one session."""
        with self.store.lock("network"):
            with self.session():
                yield

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Share one host netlink socket between the steps of an operation."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    @contextlib.contextmanager
    def netlink(self) -> Iterator[Any]:
        """The session's socket (opened on first use), or one of its own."""
        from . import links

        if self._ipr is not None:
            yield self._ipr
            return
        ipr = links.open_host()
        if self._depth:
            self._ipr = ipr
            yield ipr
            return
        try:
            yield ipr
        finally:
            ipr.close()

    # -- names -------------------------------------------------------------------------
    def alias(self, kind: str, name: str) -> str:
        return f"volmerge:{self.tag}:{kind}:{name}"[:255]

    @property
    def alias_prefix(self) -> str:
        return f"volmerge:{self.tag}:"

    def veth_name(self, cid: str) -> str:
        return "vmh-" + sha256_hex(f"{self.tag}:{cid}".encode())[:10]

    # -- derived state -----------------------------------------------------------------
    def ensure_bridge(self, net: Network) -> bool:
        """The network's bridge up with its gateway address; True if it was made."""
        from . import links

        with self.netlink() as ipr:
            created = links.ensure_bridge(ipr, net.bridge, net.gateway, net.prefixlen,
                                          self.alias("bridge", net.name))
        links.sysctl("net/ipv4/ip_forward", "1")
        return created

    def delete_link(self, name: str) -> None:
        from . import links

        with self.netlink() as ipr:
            links.delete(ipr, name)

    def retire_link(self, name: str) -> None:
        from . import links

        with self.netlink() as ipr:
            links.retire(ipr, name)

    def refresh_hosts(self, network: str) -> None:
        """Every attached container's /etc/hosts names all its peers."""
        atts = [r.attachment for r in self.rows.attachments(network) if r.attachment.ip]
        peers = [(a.ip, a.hostname, list(a.aliases)) for a in atts if a.ip]
        for a in atts:
            hosts.write_in_place(a.hosts_path, hosts.render((a.ip, a.hostname, list(a.aliases)),
                                                            peers, a.extra_hosts))

    def apply_nat(self) -> None:
        """The nft table rewritten whole from the rows."""
        nets = self.rows.networks()
        bridges = {n.name: n.bridge for n in nets}
        pts = [ports.NatPort(spec, r.attachment.ip, bridges[r.attachment.network])
               for r in self.rows.attachments()
               if r.attachment.ip and r.attachment.network in bridges
               for spec in r.attachment.ports]
        ports.apply(ports.render(self.table, [ports.NatNetwork(n.bridge, n.subnet) for n in nets],
                                 pts))

    def start_removing_nat_ports(self, specs: Iterable[PortSpec]) -> ports.Removal:
        """Published ports leaving the live table, beside the caller's other work."""
        return ports.start_removing(self.table, specs)

    def add_nat_ports(self, publish: list[ports.NatPort]) -> bool:
        """Add published ports to the live table; False when it must be rewritten."""
        return ports.add_elements(self.table, publish)

    def nat_rules(self) -> str:
        return ports.listing(self.table)
