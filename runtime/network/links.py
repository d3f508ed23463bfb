"""Links over netlink (pyroute2): bridges, veth pairs, addresses, routes.

Every link volmerge makes carries an ``ifalias`` ``volmerge:<store tag>:...``
so that reconcile() can tell its own leftovers from anything else on the host
(another store root, another tool) without a naming convention doing it.
pyroute2 is imported here and only here, and only the modules used (see
_pyroute2_package); it still costs ~80 ms to import (asyncio, ssl and
multiprocessing come with its core), so the manager imports this module lazily.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def _pyroute2_package() -> None:
    """Register pyroute2's package without running its ``__init__``.

    That ``__init__`` imports every subsystem (ndb, ipdb, nl80211, ethtool,
    nftables, ...) to re-export their names, ~20 ms of a bridged ``run``; a
    submodule import runs it first.  Here the package module is created
    from its spec but not executed, so ``pyroute2.iproute.linux`` loads only
    what it needs.  The first access to a name the ``__init__`` defines
    (``from pyroute2 import NDB`` anywhere else in the process) runs it
    then, so the package stays complete for every other user."""
    if "pyroute2" in sys.modules:
        return
    import importlib.util

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # the ordinary import below reports the missing package
    loader = spec.loader
    pkg = importlib.util.module_from_spec(spec)
    where = list(spec.submodule_search_locations or [])
    state = {"initialised": False}

    def is_submodule(name: str) -> bool:  # ``from pyroute2 import config`` imports it
        return any(os.path.exists(os.path.join(d, name + ".py"))
                   or os.path.isdir(os.path.join(d, name)) for d in where)

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or state["initialised"] or is_submodule(name):
            raise AttributeError(name)
        state["initialised"] = True
        loader.exec_module(pkg)
        del pkg.__dict__["__getattr__"]
        return getattr(pkg, name)

    pkg.__dict__["__getattr__"] = __getattr__
    sys.modules["pyroute2"] = pkg


_pyroute2_package()

from pyroute2.iproute.linux import IPRoute  # noqa: E402 - after the package is registered
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

ALIAS_PREFIX = "volmerge:"


def open_host() -> IPRoute:
    """Netlink in the caller's own network namespace (no event groups)."""
    return IPRoute(groups=0)


def open_in(sock: socket.socket) -> IPRoute:
    """Netlink through a socket created inside another namespace."""
    return IPRoute(use_socket=sock, groups=0)


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None


def links(ipr: IPRoute) -> Iterator[LinkInfo]:
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


def lookup(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def delete(ipr: IPRoute, name: str) -> bool:
    """Delete a link by name; deleting one end of a veth removes both."""
    idx = lookup(ipr, name)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


def ensure_bridge(ipr: IPRoute, name: str, gateway: str, prefixlen: int, alias: str) -> bool:
    """Make the bridge exist, carry the gateway address and be up.  Returns
    True when it had to be created (first use, or after a reboot)."""
    created = False
    idx = lookup(ipr, name)
    if idx is not None and ipr.get_links(idx)[0]["flags"] & 1:  # IFF_UP: the common case
        return False
    if idx is None:
        try:
            ipr.link("add", ifname=name, kind="bridge")
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        idx = lookup(ipr, name)
        assert idx is not None
    have = {
        (a.get("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.get_addr(family=socket.AF_INET, index=idx)
    }
    if (gateway, prefixlen) not in have:
        try:
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    ipr.link("set", index=idx, state="up", ifalias=alias)
    # Loopback clients reach published ports through DNAT to this bridge.
    sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return created


def add_veth(ipr: IPRoute, host_name: str, bridge: str, netns_fd: int, mac: str | None,
             alias: str) -> None:
    """A veth pair whose far end is born inside the namespace as ``eth0``
    (created there directly: no window with a stray ``eth0`` on the host);
    ``mac`` None (a row without one): the kernel picks the address."""
    peer: dict[str, Any] = {"ifname": "eth0", "net_ns_fd": netns_fd}
    if mac is not None:
        peer["address"] = mac
    spec = {"ifname": host_name, "kind": "veth", "peer": peer}
    try:
        ipr.link("add", **spec)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        delete(ipr, host_name)  # a leftover of a crash: the name is ours
        ipr.link("add", **spec)
    idx = lookup(ipr, host_name)
    br = lookup(ipr, bridge)
    if idx is None or br is None:
        raise OSError(errno.ENODEV, f"link {host_name} or bridge {bridge} vanished")
    ipr.link("set", index=idx, master=br, state="up", ifalias=alias)
    # hairpin: a container reaching its own published port through a host
    # address is DNATed back out of the port it came in on
    ipr.brport("set", index=idx, mode=1)


def configure_inside(ipr: IPRoute, ip: str | None, prefixlen: int | None,
                     gateway: str | None) -> None:
    """Inside the container's namespace: lo up; eth0 addressed, up, routed."""
    lo = lookup(ipr, "lo")
    if lo is not None:
        ipr.link("set", index=lo, state="up")
    if ip is None:
        return
    eth0 = lookup(ipr, "eth0")
    if eth0 is None:
        raise OSError(errno.ENODEV, "eth0 is missing in the container namespace")
    ipr.addr("add", index=eth0, address=ip, prefixlen=prefixlen)
    ipr.link("set", index=eth0, state="up")
    if gateway:
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=eth0)


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
