"""Links over netlink: bridges, veth pairs, addresses, routes.

Every link volmerge makes carries an ``ifalias`` ``volmerge:<store tag>:...``
so that reconcile() can tell its own leftovers from anything else on the host
(another store root, another tool) without a naming convention doing it.

pyroute2 encodes every request and decodes every reply (its message classes:
``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``); :class:`Netlink` only sends them on a
NETLINK_ROUTE socket and reads the answer, synchronously.  pyroute2's own
``IPRoute`` is built on asyncio and imports, with it, ssl, unittest (its mock
engine), multiprocessing and its request framework: ~60 ms of a bridged
``run`` for the ten requests volmerge makes, against ~15 ms for the message
classes.  pyroute2 is imported here and only here, and only the modules used
(see _pyroute2_package); the manager imports this module lazily.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any


def _pyroute2_package() -> None:
    """Register pyroute2's package without running its ``__init__``.

    That ``__init__`` imports every subsystem (ndb, ipdb, nl80211, ethtool,
    nftables, ...) to re-export their names, ~20 ms of a bridged ``run``; a
    submodule import runs it first.  Here the package module is created
    from its spec but not executed, so the message classes load only what
    they need.  The first access to a name the ``__init__`` defines
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

# after the package is registered:
from pyroute2.netlink import (  # noqa: E402
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import (  # noqa: E402
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_SETLINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

NETLINK_ROUTE = 0
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
_REPLIES = {RTM_NEWLINK: ifinfmsg, RTM_NEWADDR: ifaddrmsg}
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1


class Netlink:
    """A NETLINK_ROUTE socket that sends one request at a time and returns
    its decoded replies; an error reply raises :class:`NetlinkError` (its
    ``code`` an errno).  ``sock``: a socket made inside another network
    namespace (runtime.network.netns), which this object then owns."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else socket.socket(
            socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg: Any, kind: int, flags: int = 0) -> list[Any]:
        """Send ``msg`` as a ``kind`` request (NLM_F_REQUEST | NLM_F_ACK |
        ``flags``); its replies until the acknowledgement (or, for a dump,
        until the end of the dump)."""
        self.seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self.seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        out: list[Any] = []
        while True:
            data = self.sock.recv(1 << 20)  # a dump's part is at most a page or two
            off = 0
            while off + _HEADER.size <= len(data):
                length, mtype, _, seq, _ = _HEADER.unpack_from(data, off)
                if length < _HEADER.size:
                    raise NetlinkError(errno.EBADMSG, "malformed netlink reply")
                body = data[off:off + length]
                off += (length + 3) & ~3
                if seq != self.seq:
                    continue  # a late answer to an earlier request
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, _HEADER.size)[0]
                    if code:
                        raise NetlinkError(code)
                    return out  # the acknowledgement
                if mtype == NLMSG_DONE:
                    return out
                cls = _REPLIES.get(mtype)
                if cls is not None:
                    reply = cls(body)
                    reply.decode()
                    out.append(reply)


def open_host() -> Netlink:
    """Netlink in the caller's own network namespace."""
    return Netlink()


def open_in(sock: socket.socket) -> Netlink:
    """Netlink through a socket created inside another namespace."""
    return Netlink(sock)


def _link(index: int = 0, *attrs: tuple[str, Any], flags: int = 0, change: int = 0,
          family: int = socket.AF_UNSPEC) -> Any:
    msg = ifinfmsg()
    msg["family"] = family
    msg["index"] = index
    msg["flags"] = flags
    msg["change"] = change
    msg["attrs"] = [list(a) for a in attrs]
    return msg


ALIAS_PREFIX = "volmerge:"


class LinkInfo:
    """One link of a dump: what reconcile() reads."""

    __slots__ = ("index", "name", "kind", "alias", "master")

    def __init__(self, index: int, name: str, kind: str | None, alias: str | None,
                 master: int | None) -> None:
        self.index, self.name, self.kind, self.alias, self.master = \
            index, name, kind, alias, master


def links(ipr: Netlink) -> Iterator[LinkInfo]:
    for msg in ipr.request(_link(), RTM_GETLINK, NLM_F_DUMP):
        info = msg.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info is not None else None
        yield LinkInfo(
            index=msg["index"],
            name=msg.get("IFLA_IFNAME"),
            kind=kind,
            alias=msg.get("IFLA_IFALIAS"),
            master=msg.get("IFLA_MASTER"),
        )


def _get(ipr: Netlink, name: str) -> Any | None:
    """The link named ``name`` (RTM_GETLINK by name), or None."""
    try:
        (msg,) = ipr.request(_link(0, ("IFLA_IFNAME", name)), RTM_GETLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return msg


def lookup(ipr: Netlink, name: str) -> int | None:
    msg = _get(ipr, name)
    return None if msg is None else int(msg["index"])


def delete(ipr: Netlink, name: str) -> bool:
    """Delete a link by name; deleting one end of a veth removes both."""
    idx = lookup(ipr, name)
    if idx is None:
        return False
    try:
        ipr.request(_link(idx), RTM_DELLINK)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


#: what a retired host end is renamed to (``vmr-`` and 11 random hex digits):
#: its name is free at once for the container's next start
RETIRED_PREFIX = "vmr-"


def retire(ipr: Netlink, name: str) -> bool:
    """Take the host end of a veth off its bridge and down, and rename it
    out of the way (three requests, ~2 ms), leaving the pair's deletion to
    the kernel: it goes with the network namespace that holds the other
    end, once that is unpinned and empty, in the kernel's own work queue.
    Deleting it here waited for RCU grace periods, ~20-40 ms of every stop
    of a bridged container and of an upgrade's downtime.  Down and off the
    bridge it forwards nothing meanwhile (the bridge forgets the addresses
    it learned on it), so a successor with the same address and MAC is not
    shadowed; renamed, its name is free for the container's next start.
    False when it is gone."""
    idx = lookup(ipr, name)
    if idx is None:
        return False
    try:
        ipr.request(_link(idx, ("IFLA_MASTER", 0), flags=0, change=IFF_UP), RTM_SETLINK)
        ipr.request(_link(idx, ("IFLA_IFNAME", RETIRED_PREFIX + os.urandom(6).hex()[:11])),
                    RTM_SETLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def ensure_bridge(ipr: Netlink, name: str, gateway: str, prefixlen: int, alias: str) -> bool:
    """Make the bridge exist, carry the gateway address and be up.  Returns
    True when it had to be created (first use, or after a reboot)."""
    created = False
    msg = _get(ipr, name)
    if msg is not None and msg["flags"] & IFF_UP:  # the common case
        return False
    idx = None if msg is None else int(msg["index"])
    if idx is None:
        try:
            ipr.request(_link(0, ("IFLA_IFNAME", name),
                              ("IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "bridge"]]})),
                        RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        idx = lookup(ipr, name)
        assert idx is not None
    dump = ifaddrmsg()
    dump["family"] = socket.AF_INET
    have = {
        (a.get("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.request(dump, RTM_GETADDR, NLM_F_DUMP) if a["index"] == idx
    }
    if (gateway, prefixlen) not in have:
        try:
            _add_address(ipr, idx, gateway, prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    ipr.request(_link(idx, ("IFLA_IFALIAS", alias), flags=IFF_UP, change=IFF_UP), RTM_SETLINK)
    # Loopback clients reach published ports through DNAT to this bridge.
    sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return created


def add_veth(ipr: Netlink, host_name: str, bridge: str | None, netns_fd: int, mac: str | None,
             alias: str) -> None:
    """A veth pair whose far end is born inside the namespace as ``eth0``
    (created there directly: no window with a stray ``eth0`` on the host);
    ``mac`` None (a row without one): the kernel picks the address.
    ``bridge`` None (a namespace staged ahead of its start): the host end
    stays down and off every bridge until :func:`enslave`."""
    peer: list[list[Any]] = [["IFLA_IFNAME", "eth0"], ["IFLA_NET_NS_FD", netns_fd]]
    if mac is not None:
        peer.append(["IFLA_ADDRESS", mac])
    info = {"attrs": [["IFLA_INFO_KIND", "veth"],
                      ["IFLA_INFO_DATA", {"attrs": [["VETH_INFO_PEER", {"attrs": peer}]]}]]}

    def add() -> None:
        ipr.request(_link(0, ("IFLA_IFNAME", host_name), ("IFLA_LINKINFO", info)),
                    RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    try:
        add()
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        delete(ipr, host_name)  # a leftover of a crash: the name is ours
        add()
    if bridge is None:
        idx = lookup(ipr, host_name)
        if idx is None:
            raise OSError(errno.ENODEV, f"link {host_name} vanished")
        ipr.request(_link(idx, ("IFLA_IFALIAS", alias)), RTM_SETLINK)
    elif not enslave(ipr, host_name, bridge, alias):
        raise OSError(errno.ENODEV, f"link {host_name} vanished")


def enslave(ipr: Netlink, host_name: str, bridge: str, alias: str) -> bool:
    """The host end of a veth on ``bridge`` and up; False when it is gone.
    The link is named in the requests rather than looked up first (index 0
    and ``IFLA_IFNAME``: the kernel finds it by name), one request less at
    an upgrade's switch."""
    br = lookup(ipr, bridge)
    if br is None:
        raise OSError(errno.ENODEV, f"bridge {bridge} vanished")
    try:
        ipr.request(_link(0, ("IFLA_IFNAME", host_name), ("IFLA_MASTER", br),
                          ("IFLA_IFALIAS", alias), flags=IFF_UP, change=IFF_UP), RTM_SETLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    # hairpin: a container reaching its own published port through a host
    # address is DNATed back out of the port it came in on (the bridge port's
    # IFLA_BRPORT_MODE, set as `ip link set ... type bridge_slave hairpin on` does)
    ipr.request(_link(0, ("IFLA_IFNAME", host_name), ("IFLA_LINKINFO", {"attrs": [
        ["IFLA_INFO_SLAVE_KIND", "bridge"],
        ["IFLA_INFO_SLAVE_DATA", {"attrs": [["IFLA_BRPORT_MODE", 1]]}]]})), RTM_NEWLINK)
    return True


def configure_inside(ipr: Netlink, ip: str | None, prefixlen: int | None,
                     gateway: str | None) -> None:
    """Inside the container's namespace: lo up; eth0 addressed, up, routed."""
    lo = lookup(ipr, "lo")
    if lo is not None:
        ipr.request(_link(lo, flags=IFF_UP, change=IFF_UP), RTM_SETLINK)
    if ip is None:
        return
    eth0 = lookup(ipr, "eth0")
    if eth0 is None:
        raise OSError(errno.ENODEV, "eth0 is missing in the container namespace")
    assert prefixlen is not None
    _add_address(ipr, eth0, ip, prefixlen)
    ipr.request(_link(eth0, flags=IFF_UP, change=IFF_UP), RTM_SETLINK)
    if gateway:
        route = rtmsg()
        route["family"] = socket.AF_INET
        route["table"] = RT_TABLE_MAIN
        route["proto"] = RTPROT_BOOT
        route["type"] = RTN_UNICAST
        route["attrs"] = [["RTA_GATEWAY", gateway], ["RTA_OIF", eth0]]
        ipr.request(route, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)


def _add_address(ipr: Netlink, index: int, ip: str, prefixlen: int) -> None:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    msg["attrs"] = [["IFA_LOCAL", ip], ["IFA_ADDRESS", ip]]
    ipr.request(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)


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
