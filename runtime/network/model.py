"""Values the network manager hands out: networks, leases, attachments, ports.

Frozen value classes (runtime.value: no dataclass compiled on a bridged
``run``'s path), so the engine can keep them, compare them and put them in
JSON (``to_dict``) without knowing anything about netlink.
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import BadInput
from ..value import FrozenValue, Ordered, plain

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

PROTOS = ("tcp", "udp")
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # compiled (and cached) by re when used
RESERVED = ("none", "host")


class PortSpec(Ordered, FrozenValue):
    """One published port: ``HOST_IP:HOST_PORT -> container:CONTAINER_PORT/PROTO``.

    ``host_ip`` ``0.0.0.0`` means every address of the host, loopback included.
    """

    __slots__ = ("host_ip", "host_port", "container_port", "proto")
    if TYPE_CHECKING:
        host_ip: str
        host_port: int
        container_port: int
        proto: str

    def __init__(self, host_ip: str, host_port: int, container_port: int,
                 proto: str = "tcp") -> None:
        self._assign(locals())
        try:
            ip = ipaddress.IPv4Address(self.host_ip or "0.0.0.0")
        except ValueError:
            raise BadInput(f"port {self}: host address {self.host_ip!r} is not an IPv4 address") from None
        object.__setattr__(self, "host_ip", str(ip))
        for what, port in (("host", self.host_port), ("container", self.container_port)):
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise BadInput(f"port {self}: {what} port {port!r} is not in 1-65535")
        if self.proto not in PROTOS:
            raise BadInput(f"port {self}: protocol {self.proto!r} is not tcp or udp")

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        """``[HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`` (docker's ``-p`` syntax)."""
        spec, _, proto = text.strip().partition("/")
        proto = (proto or "tcp").lower()
        parts = spec.split(":")
        if len(parts) == 2:
            host_ip, hp, cp = "0.0.0.0", parts[0], parts[1]
        elif len(parts) == 3:
            host_ip, hp, cp = parts[0] or "0.0.0.0", parts[1], parts[2]
        else:
            raise BadInput(f"port {text!r}: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]")
        if not (hp.isdigit() and cp.isdigit()):
            raise BadInput(f"port {text!r}: ports must be numbers in 1-65535")
        return cls(host_ip, int(hp), int(cp), proto)

    def clashes(self, other: PortSpec) -> bool:
        """Two publications clash when they would catch the same packets."""
        if self.host_port != other.host_port or self.proto != other.proto:
            return False
        return "0.0.0.0" in (self.host_ip, other.host_ip) or self.host_ip == other.host_ip

    def __str__(self) -> str:
        host = "" if self.host_ip in ("", "0.0.0.0") else f"{self.host_ip}:"
        return f"{host}{self.host_port}:{self.container_port}/{self.proto}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = plain(self)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortSpec:
        return cls(d["host_ip"], int(d["host_port"]), int(d["container_port"]), d["proto"])


class Network(FrozenValue):
    """A bridge network; ``containers`` (filled in for display) is not compared."""

    __slots__ = ("name", "id", "bridge", "subnet", "gateway", "default", "created",
                 "containers")
    _not_compared = ("containers",)
    if TYPE_CHECKING:
        name: str
        id: str
        bridge: str
        subnet: str
        gateway: str
        default: bool
        created: float
        containers: tuple[dict[str, Any], ...]

    def __init__(self, name: str, id: str, bridge: str, subnet: str, gateway: str,
                 default: bool = False, created: float = 0.0,
                 containers: tuple[dict[str, Any], ...] = ()) -> None:
        self._assign(locals())

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = plain(self)
        d["containers"] = list(self.containers)
        return d


class Lease(FrozenValue):
    """An address that belongs to a container until it is released (``rm``)."""

    __slots__ = ("network", "ip", "container_id", "hostname", "aliases", "ports")
    if TYPE_CHECKING:
        network: str
        ip: str
        container_id: str
        hostname: str
        aliases: tuple[str, ...]
        ports: tuple[PortSpec, ...]

    def __init__(self, network: str, ip: str, container_id: str, hostname: str,
                 aliases: tuple[str, ...] = (), ports: tuple[PortSpec, ...] = ()) -> None:
        self._assign(locals())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = plain(self)
        d["aliases"] = list(self.aliases)
        d["ports"] = [p.to_dict() for p in self.ports]
        return d


class Attachment(FrozenValue):
    """What the engine needs to start a container on a network.

    ``netns_path`` is a bind-mounted network namespace to join (``None`` for
    the host network); ``hosts_path`` is the file to bind-mount at
    ``/etc/hosts`` (its content is kept current in place); ``extra_hosts``:
    ``--add-host`` (host, ip) pairs, checked.
    """

    __slots__ = ("netns_path", "ip", "gateway", "prefixlen", "hosts_path", "ports", "network",
                 "container_id", "hostname", "mac", "host_veth", "aliases", "extra_hosts")
    if TYPE_CHECKING:
        netns_path: str | None
        ip: str | None
        gateway: str | None
        prefixlen: int | None
        hosts_path: str
        ports: tuple[PortSpec, ...]
        network: str
        container_id: str
        hostname: str
        mac: str | None
        host_veth: str | None
        aliases: tuple[str, ...]
        extra_hosts: tuple[tuple[str, str], ...]

    def __init__(self, netns_path: str | None, ip: str | None, gateway: str | None,
                 prefixlen: int | None, hosts_path: str, ports: tuple[PortSpec, ...] = (),
                 network: str = "", container_id: str = "", hostname: str = "",
                 mac: str | None = None, host_veth: str | None = None,
                 aliases: tuple[str, ...] = (),
                 extra_hosts: tuple[tuple[str, str], ...] = ()) -> None:
        self._assign(locals())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = plain(self)
        d["ports"] = [p.to_dict() for p in self.ports]
        d["aliases"] = list(self.aliases)
        d["extra_hosts"] = [list(e) for e in self.extra_hosts]
        return d


def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise BadInput(
            f"network name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '-'"
        )
    if name in RESERVED:
        raise BadInput(f"network name {name!r} is reserved")
    return name


def check_hostname(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}", name or ""):
        raise BadInput(f"hostname {name!r} is invalid: use 1-253 letters, digits, '_', '.', '-'")
    return name
