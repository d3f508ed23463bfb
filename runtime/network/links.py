"""Links over netlink: bridges, veth pairs, addresses, routes.

Every link volmerge makes carries an ``ifalias`` ``volmerge:<store tag>:...``
so that reconcile() can tell its own leftovers from anything else on the host
(another store root, another tool) without a naming convention doing it.

The manager works through :class:`runtime.network.rtnl.Rtnl` (``open_rtnl``),
a small struct-and-socket rtnetlink client: importing pyroute2 costs ~90 ms,
a quarter of a ``volmerge run`` on a bridge network.  ``open_host`` /
``open_in`` still hand out a pyroute2 ``IPRoute`` for callers that want its
full API, and ``lookup``, ``delete`` and ``links`` accept either.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .rtnl import IFF_UP, Rtnl

ALIAS_PREFIX = "volmerge:"


def open_rtnl(sock: socket.socket | None = None) -> Rtnl:
    """The fast client: in the caller's namespace, or through ``sock``
    created inside another one (see netns.create)."""
    return Rtnl(sock)


def open_host() -> Any:
    """A pyroute2 IPRoute in the caller's own network namespace (no event groups)."""
    from pyroute2 import IPRoute

    return IPRoute(groups=0)


def open_in(sock: socket.socket) -> Any:
    """A pyroute2 IPRoute through a socket created inside another namespace."""
    from pyroute2 import IPRoute

    return IPRoute(use_socket=sock, groups=0)


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None


def links(ipr: Any) -> Iterator[LinkInfo]:
    if isinstance(ipr, Rtnl):
        for index, name, kind, alias, master in ipr.links():
            yield LinkInfo(index=index, name=name or "", kind=kind, alias=alias, master=master)
        return
    for msg in ipr.get_links():
        info = msg.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info is not None else None
        yield LinkInfo(
            index=msg["index"],
            name=msg.get("IFLA_IFNAME"),
            kind=kind,
            alias=msg.get("IFLA_IFALIAS"),
            master=msg.get("IFLA_MASTER"),
        )


def lookup(ipr: Any, name: str) -> int | None:
    if isinstance(ipr, Rtnl):
        return ipr.lookup(name)
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def delete(ipr: Any, name: str) -> bool:
    """Delete a link by name; deleting one end of a veth removes both."""
    idx = lookup(ipr, name)
    if idx is None:
        return False
    if isinstance(ipr, Rtnl):
        try:
            ipr.delete(idx)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
            return False
        return True
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


def ensure_bridge(ipr: Rtnl, name: str, gateway: str, prefixlen: int, alias: str) -> bool:
    """Make the bridge exist, carry the gateway address and be up.  Returns
    True when it had to be created (first use, or after a reboot)."""
    created = False
    found = ipr.link(name)
    if found is not None and found[1] & IFF_UP:  # the common case
        return False
    if found is None:
        try:
            ipr.add_bridge(name)
            created = True
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        found = ipr.link(name)
        assert found is not None
    idx = found[0]
    if (gateway, prefixlen) not in ipr.ipv4_addrs(idx):
        try:
            ipr.add_addr(idx, gateway, prefixlen)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    ipr.set_link(idx, up=True, alias=alias)
    # Loopback clients reach published ports through DNAT to this bridge.
    sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return created


def add_veth(ipr: Rtnl, host_name: str, bridge: str, netns_fd: int, mac: str,
             alias: str) -> None:
    """A veth pair whose far end is born inside the namespace as ``eth0``
    (created there directly: no window with a stray ``eth0`` on the host)."""
    try:
        ipr.add_veth(host_name, "eth0", netns_fd, mac)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        delete(ipr, host_name)  # a leftover of a crash: the name is ours
        ipr.add_veth(host_name, "eth0", netns_fd, mac)
    idx = ipr.lookup(host_name)
    br = ipr.lookup(bridge)
    if idx is None or br is None:
        raise OSError(errno.ENODEV, f"link {host_name} or bridge {bridge} vanished")
    ipr.set_link(idx, master=br, up=True, alias=alias)
    # hairpin: a container reaching its own published port through a host
    # address is DNATed back out of the port it came in on
    ipr.set_hairpin(idx)


def configure_inside(ipr: Rtnl, ip: str | None, prefixlen: int | None,
                     gateway: str | None) -> None:
    """Inside the container's namespace: lo up; eth0 addressed, up, routed."""
    lo = ipr.lookup("lo")
    if lo is not None:
        ipr.set_link(lo, up=True)
    if ip is None:
        return
    eth0 = ipr.lookup("eth0")
    if eth0 is None:
        raise OSError(errno.ENODEV, "eth0 is missing in the container namespace")
    assert prefixlen is not None
    ipr.add_addr(eth0, ip, prefixlen)
    ipr.set_link(eth0, up=True)
    if gateway:
        ipr.add_default_route(gateway, eth0)


def sysctl(key: str, value: str) -> None:
    """Write /proc/sys/<key> of the caller's network namespace if it differs."""
    path = os.path.join("/proc/sys", key)
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
    except FileNotFoundError:
        return
    with open(path, "w") as f:
        f.write(value)
