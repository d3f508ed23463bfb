"""A small rtnetlink client: exactly the link, address and route requests
that connecting and disconnecting a container needs.

Why not pyroute2 here: importing pyroute2 costs ~90 ms (its package imports
every netlink family and asyncio), which was a quarter of a ``volmerge run``
on a bridge network.  This module is struct + socket (~1 ms to import).
pyroute2 stays the library behind ``links.open_host()`` for callers that
want its full API.  Every request asks for an ACK and a failure raises
``OSError`` with the kernel's errno.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
# message types
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE = 24
# flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
# attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_PROTINFO = 1, 3, 10, 12
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP = 0x1
AF_BRIDGE = 7
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HDR = struct.Struct("=IHHII")      # nlmsghdr
_IFI = struct.Struct("=BxHiII")     # ifinfomsg
_IFA = struct.Struct("=BBBBI")      # ifaddrmsg
_RTM = struct.Struct("=BBBBBBBBI")  # rtmsg
_ATTR = struct.Struct("=HH")


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    n = _ATTR.size + len(payload)
    return _ATTR.pack(n, kind) + payload + b"\0" * (-n & 3)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(s: str) -> bytes:
    return s.encode() + b"\0"


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def _mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def parse_attrs(data: bytes, off: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + _ATTR.size <= len(data):
        n, kind = _ATTR.unpack_from(data, off)
        if n < _ATTR.size:
            break
        out[kind & ~NLA_F_NESTED & 0x7FFF] = data[off + _ATTR.size: off + n]
        off += (n + 3) & ~3
    return out


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.split(b"\0", 1)[0].decode(errors="replace")


class Rtnl:
    """One NETLINK_ROUTE socket (in the caller's namespace, or ``sock``
    created inside another one)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                          NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------
    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST, self.seq, 0)
                       + body)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of every reply to ``seq`` until the ACK or DONE;
        an error reply raises OSError."""
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + _HDR.size <= len(data):
                n, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, off)
                if n < _HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                payload = data[off + _HDR.size: off + n]
                off += (n + 3) & ~3
                if mseq != seq:
                    continue  # a late reply to an earlier request
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                if mtype == NLMSG_DONE:
                    return
                yield mtype, payload

    def request(self, mtype: int, body: bytes, flags: int = 0) -> list[bytes]:
        seq = self._send(mtype, flags | NLM_F_ACK, body)
        return [p for _t, p in self._replies(seq)]

    # -- links -------------------------------------------------------------------
    def link(self, name: str) -> tuple[int, int] | None:
        """(index, flags) of the link called ``name``, or None."""
        try:
            replies = self.request(RTM_GETLINK, _IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name)))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EINVAL):
                return None
            raise
        for p in replies:
            _fam, _type, index, flags, _change = _IFI.unpack_from(p)
            return index, flags
        return None

    def lookup(self, name: str) -> int | None:
        found = self.link(name)
        return None if found is None else found[0]

    def links(self) -> Iterator[tuple[int, str | None, str | None, str | None, int | None]]:
        """(index, name, kind, alias, master) of every link."""
        seq = self._send(RTM_GETLINK, NLM_F_DUMP, _IFI.pack(0, 0, 0, 0, 0))
        for mtype, p in list(self._replies(seq)):
            if mtype != RTM_NEWLINK:
                continue
            index = _IFI.unpack_from(p)[2]
            a = parse_attrs(p, _IFI.size)
            kind = None
            if IFLA_LINKINFO in a:
                kind = _text(parse_attrs(a[IFLA_LINKINFO]).get(IFLA_INFO_KIND))
            master = struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else None
            yield index, _text(a.get(IFLA_IFNAME)), kind, _text(a.get(IFLA_IFALIAS)), master

    def delete(self, index: int) -> None:
        self.request(RTM_DELLINK, _IFI.pack(0, 0, index, 0, 0))

    def add_bridge(self, name: str) -> None:
        self.request(RTM_NEWLINK, _IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name))
                     + nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, _str("bridge"))),
                     NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, peer_mac: str) -> None:
        """A veth pair ``name`` (here) / ``peer`` (born in the namespace of
        ``peer_netns_fd`` with ``peer_mac``)."""
        peer_msg = (_IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(peer))
                    + attr(IFLA_NET_NS_FD, _u32(peer_netns_fd)) + attr(IFLA_ADDRESS, _mac(peer_mac)))
        info = nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, _str("veth")),
                      nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        self.request(RTM_NEWLINK, _IFI.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name)) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def set_link(self, index: int, *, up: bool | None = None, master: int | None = None,
                 alias: str | None = None) -> None:
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        body = _IFI.pack(0, 0, index, flags, change)
        if master is not None:
            body += attr(IFLA_MASTER, _u32(master))
        if alias is not None:
            body += attr(IFLA_IFALIAS, alias.encode())
        self.request(RTM_NEWLINK, body)

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """Bridge port hairpin mode (``bridge link set dev X hairpin on``)."""
        self.request(RTM_SETLINK, _IFI.pack(AF_BRIDGE, 0, index, 0, 0)
                     + nested(IFLA_PROTINFO, attr(IFLA_BRPORT_MODE, bytes([1 if on else 0]))))

    # -- addresses and routes --------------------------------------------------------
    def ipv4_addrs(self, index: int) -> set[tuple[str, int]]:
        """(address, prefixlen) of the IPv4 addresses on link ``index``."""
        seq = self._send(RTM_GETADDR, NLM_F_DUMP, _IFA.pack(socket.AF_INET, 0, 0, 0, 0))
        out = set()
        for mtype, p in list(self._replies(seq)):
            if mtype != RTM_NEWADDR:
                continue
            _fam, plen, _fl, _scope, idx = _IFA.unpack_from(p)
            a = parse_attrs(p, _IFA.size)
            if idx == index and IFA_ADDRESS in a:
                out.add((socket.inet_ntoa(a[IFA_ADDRESS]), plen))
        return out

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        raw = socket.inet_aton(address)
        self.request(RTM_NEWADDR, _IFA.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                     + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw), NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: str, oif: int) -> None:
        self.request(RTM_NEWROUTE, _RTM.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                                             RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                     + attr(RTA_GATEWAY, socket.inet_aton(gateway)) + attr(RTA_OIF, _u32(oif)),
                     NLM_F_CREATE | NLM_F_EXCL)
