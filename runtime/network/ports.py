"""Published ports and outbound NAT as one nftables table per store root.

Decision (see docs/network.md): kernel NAT, no userspace proxy.
``prerouting`` DNATs packets that arrive for a local address; ``output`` does
the same for connections the host itself makes, so 127.0.0.1:PORT and the
host's own addresses both work.  Loopback needs two more things: the bridge
has ``route_localnet=1`` (a 127.0.0.1 source may then leave through it) and
``postrouting`` masquerades 127.0.0.0/8 sources to the gateway, because the
container would otherwise answer to its own loopback.

The whole table is rendered from the state database and replaced in one nft
transaction (``add table; delete table; table {...}``): never a partial rule
set, no rule handles to track, and reconcile() is the same call.  nft(8) is
used rather than pyroute2's nftables module, which cannot yet express NAT
statements soundly.  Published ports live in two maps (by host address, and
for every address), so that publishing is one cheap ``add element``; any
removal rebuilds the table (a removal costs the same either way).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..digest import sha256_hex
from ..errors import BadInput
from ..value import FrozenValue
from .model import PortSpec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import subprocess


class NatNetwork(FrozenValue):
    __slots__ = ("bridge", "subnet")
    if TYPE_CHECKING:
        bridge: str
        subnet: str

    def __init__(self, bridge: str, subnet: str) -> None:
        self._assign(locals())


class NatPort(FrozenValue):
    __slots__ = ("spec", "container_ip", "bridge")
    if TYPE_CHECKING:
        spec: PortSpec
        container_ip: str
        bridge: str

    def __init__(self, spec: PortSpec, container_ip: str, bridge: str) -> None:
        self._assign(locals())


def table_name(root: str) -> str:
    return "volmerge_" + sha256_hex(root.encode())[:8]


def render(table: str, networks: Iterable[NatNetwork], ports: Iterable[NatPort]) -> str:
    nets = sorted(networks, key=lambda n: n.bridge)
    pts = sorted(ports, key=lambda p: (p.spec.host_port, p.spec.proto, p.spec.host_ip))
    lines = [f"table ip {table}", f"delete table ip {table}"]
    if not nets:
        return "\n".join(lines) + "\n"
    by_ip = [p for p in pts if p.spec.host_ip != "0.0.0.0"]
    anyip = [p for p in pts if p.spec.host_ip == "0.0.0.0"]
    lines.append(f"table ip {table} {{")
    lines += _map("published_ip", "ipv4_addr . inet_proto . inet_service", by_ip)
    lines += _map("published_any", "inet_proto . inet_service", anyip)
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump published",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump published",
        "  }",
        "  chain published {",
        "    dnat ip to ip daddr . meta l4proto . th dport map @published_ip",
        "    dnat ip to meta l4proto . th dport map @published_any",
        "  }",
    ]
    lines += [
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    for n in nets:
        br = _q(n.bridge)
        # the host (127.0.0.1 included) and other containers of the same
        # bridge reaching a published port: answer through the gateway
        lines.append(f"    oifname {br} ip saddr 127.0.0.0/8 masquerade")
        lines.append(f"    oifname {br} ip saddr {n.subnet} ct status dnat masquerade")
        # outbound traffic of the containers
        lines.append(f"    ip saddr {n.subnet} oifname != {br} masquerade")
    lines.append("  }")
    if len(nets) > 1:
        # networks are isolated from each other, like docker's bridges
        lines += [
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
        ]
        for n in nets:
            others = ", ".join(_q(o.bridge) for o in nets if o is not n)
            lines.append(f"    iifname {_q(n.bridge)} oifname {{ {others} }} drop")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _map(name: str, key: str, items: list[NatPort]) -> list[str]:
    out = [f"  map {name} {{", f"    type {key} : ipv4_addr . inet_service"]
    if items:
        out.append("    elements = { " + ", ".join(element(p) for p in items) + " }")
    out.append("  }")
    return out


def element(p: NatPort) -> str:
    """``[HOSTIP . ]PROTO . HOSTPORT : CTRIP . CTRPORT`` in its map."""
    return f"{element_key(p.spec)} : {p.container_ip} . {p.spec.container_port}"


def element_key(spec: PortSpec) -> str:
    """``[HOSTIP . ]PROTO . HOSTPORT``: what a published port's map element is found by."""
    key = f"{spec.proto} . {spec.host_port}"
    return key if spec.host_ip == "0.0.0.0" else f"{spec.host_ip} . {key}"


def _map_of(spec: PortSpec) -> str:
    return "published_any" if spec.host_ip == "0.0.0.0" else "published_ip"


def add_elements(table: str, items: list[NatPort]) -> bool:
    """Publish ports without rebuilding the table: adding map elements is a
    cheap nft transaction (~2 ms; any commit that removes something waits
    for an RCU grace period, ~16 ms here).  False when the table is missing
    or nft refuses: the caller then rebuilds the whole table."""
    if not items:
        return True
    cmds = [f"add element ip {table} {_map_of(p.spec)} {{ {element(p)} }}" for p in items]
    return _nft(["-f", "-"], "\n".join(cmds) + "\n").returncode == 0


class Removal:
    """Published ports being taken out of the live table by an nft(8) run
    of their own (:func:`start_removing`), while the caller tears the rest
    of the attachment down: a commit that removes map elements waits for
    an RCU grace period (~15 ms here), which this overlaps."""

    def __init__(self, proc: subprocess.Popen[str] | None) -> None:
        self.proc = proc

    def done(self) -> bool:
        """Whether nft removed them all; False (the table missing, an element
        gone already, nft absent): the caller rewrites the table instead."""
        if self.proc is None:
            return False
        self.proc.communicate()
        return self.proc.returncode == 0


def start_removing(table: str, specs: Iterable[PortSpec]) -> Removal:
    """Start removing the map elements of ``specs`` (one atomic nft
    transaction: all of them or none); :meth:`Removal.done` waits."""
    import subprocess

    cmds = [f"delete element ip {table} {_map_of(s)} {{ {element_key(s)} }}" for s in specs]
    try:
        proc = subprocess.Popen([nft_binary(), "-f", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    except (OSError, BadInput):
        return Removal(None)
    try:
        assert proc.stdin is not None
        proc.stdin.write("\n".join(cmds) + "\n")
        proc.stdin.close()
    except OSError:  # nft died before reading: done() reports it
        pass
    return Removal(proc)


def _q(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """nft(8) with ``args``; subprocess is imported here, by the runs that
    publish a port or make a network's table, not by every bridged run."""
    import subprocess

    return subprocess.run([nft_binary(), *args], input=stdin, text=True, capture_output=True)


def nft_binary() -> str:
    import shutil

    path = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if path is None:
        raise BadInput("nft(8) is not installed (Debian package nftables)")
    return path


def apply(ruleset: str) -> None:
    """Replace the table atomically; nft either applies all of it or none."""
    proc = _nft(["-f", "-"], ruleset)
    if proc.returncode != 0:
        raise OSError(f"nft failed: {proc.stderr.strip()}\n{ruleset}")


def listing(table: str) -> str:
    """The live table as nft prints it ('' when absent), for tests and debugging."""
    proc = _nft(["list", "table", "ip", table])
    return proc.stdout if proc.returncode == 0 else ""


def host_port_free(spec: PortSpec) -> bool:
    """Whether no process of the host listens on the port we are about to
    publish (NAT would silently shadow it).  Binds with SO_REUSEADDR, so a
    TIME_WAIT leftover is no false alarm."""
    import errno
    import socket

    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((spec.host_ip, spec.host_port))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"port {spec}: {spec.host_ip} is not an address of this host") from None
        if exc.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        s.close()
    return True
