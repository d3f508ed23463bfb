"""Address management: subnets, gateways and the lowest free address.

Pure functions over :mod:`ipaddress`; the manager persists the results in the
state database (table ``network_leases``), so allocation survives restarts and
a container keeps its address across stop/start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from ..errors import BadInput, Conflict

IPv4Net = ipaddress.IPv4Network
IPv4Addr = ipaddress.IPv4Address

# podman's habit: the default network is a /16, others are /24s after it.
DEFAULT_SUBNET = "10.88.0.0/16"
POOL = ("10.89.0.0/16", "10.90.0.0/16", "10.91.0.0/16", "172.30.0.0/16")
POOL_PREFIX = 24


def parse_subnet(text: str) -> IPv4Net:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise BadInput(f"subnet {text!r} is not a CIDR like 10.89.0.0/24") from None
        raise BadInput(f"subnet {text!r} has host bits set (did you mean {loose}?)") from None
    if not isinstance(net, IPv4Net):
        raise BadInput(f"subnet {text!r}: only IPv4 networks are supported")
    if net.prefixlen > 30:
        raise BadInput(f"subnet {text!r} is too small: use a prefix of /30 or shorter")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise BadInput(f"subnet {text!r} is a loopback, link-local or multicast range")
    return net


def _host_address(net: IPv4Net, text: str, what: str) -> IPv4Addr:
    try:
        ip = IPv4Addr(text)
    except ValueError:
        raise BadInput(f"{what} {text!r} is not an IPv4 address") from None
    if ip not in net or ip in (net.network_address, net.broadcast_address):
        raise BadInput(f"{what} {ip} is not a host address of {net}")
    return ip


def parse_gateway(net: IPv4Net, text: str | None) -> IPv4Addr:
    return next(net.hosts()) if text is None else _host_address(net, text, "gateway")


def check_address(net: IPv4Net, gateway: IPv4Addr, text: str) -> IPv4Addr:
    """A container address the caller asked for (``--ip``)."""
    ip = _host_address(net, text, "address")
    if ip == gateway:
        raise Conflict(f"address {ip} is the gateway of the network")
    return ip


def allocate(net: IPv4Net, gateway: IPv4Addr, taken: Iterable[str]) -> IPv4Addr:
    """The lowest free host address: released addresses are reused first."""
    used = {int(IPv4Addr(t)) for t in taken} | {int(gateway)}
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - 1
    for n in range(first, last + 1):
        if n not in used:
            return IPv4Addr(n)
    raise Conflict(f"network {net} has no free address left")


def overlapping(net: IPv4Net, others: Iterable[IPv4Net]) -> IPv4Net | None:
    for o in others:
        if net.overlaps(o):
            return o
    return None


def host_routes() -> list[IPv4Net]:
    """IPv4 destinations routed in this network namespace's main table, the
    default route excepted (``/proc/net/route``: no netlink import needed)."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) < 8:
                    continue
                dst = IPv4Addr(int(cols[1], 16).to_bytes(4, "little"))
                mask = IPv4Addr(int(cols[7], 16).to_bytes(4, "little"))
                net = IPv4Net(f"{dst}/{mask}", strict=False)
                if net.prefixlen:
                    out.append(net)
    except OSError:
        pass
    return out


def candidates(default: bool) -> Iterator[IPv4Net]:
    if default:
        yield IPv4Net(DEFAULT_SUBNET)
    for block in POOL:
        yield from IPv4Net(block).subnets(new_prefix=POOL_PREFIX)


def choose_subnet(default: bool, in_use: Iterable[IPv4Net]) -> IPv4Net:
    """The first candidate that overlaps neither a network of the store nor a
    route of the host (so a second store root on one host picks another one)."""
    busy = list(in_use) + host_routes()
    for net in candidates(default):
        if overlapping(net, busy) is None:
            return net
    raise Conflict("no free subnet left in the address pool: pass --subnet")
