"""NetworkManager: the facade over bridge networks, attachments and leases.

One flock (``locks/network.lock``) serialises every change, across processes;
the state database is the truth, and links, namespaces, hosts files and the
nft table are derived from it (reconcile() re-derives them after a crash).
The work is split by job: ``rows.py`` the tables as typed values,
``host.py`` the derived state on the host and the netlink session,
``attach.py`` connecting and disconnecting containers (the order of work
that makes a crash recoverable), ``reconcile.py`` the repair (imported only
when there is some: a store sweeper here checks cheaply first).
"""

from __future__ import annotations

import builtins  # annotations: the class's list() method shadows the type
import contextlib
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable

from .. import diag
from ..errors import BadInput, Conflict, NotFound
from ..store import Store, register_sweeper
from . import ipam
from .attach import SPECIAL, Attachments
from .host import Host
from .model import Attachment, Lease, Network, PortSpec, check_hostname, check_name
from .rows import NetworkRows, sweep_needed
from .schema import COMPONENT, MIGRATIONS

DEFAULT_NETWORK = "bridge"
CID_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"  # compiled (and cached) by re when used

PortsArg = Iterable[PortSpec | str] | None


class NetworkManager:
    """Networks of one store root.  See docs/network.md for the
    upgrade sequence that uses :meth:`takeover`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(COMPONENT, MIGRATIONS)
        self.rows = NetworkRows(store)
        self.host = Host(store, self.rows)
        self.attachments = Attachments(self.rows, self.host)
        self.tag = self.host.tag
        self.table = self.host.table
        self.ns_dir = self.host.ns_dir
        self.hosts_dir = self.host.hosts_dir

    # -- networks --------------------------------------------------------------
    def create(self, name: str, subnet: str | None = None, gateway: str | None = None) -> Network:
        """A bridge network with its own subnet (chosen from the pool when not
        given); refuses a taken name and a subnet overlapping another network
        or a route of the host."""
        check_name(name)
        with self.host.locked():
            return self._create_locked(name, subnet, gateway, default=False)

    def _create_locked(self, name: str, subnet: str | None, gateway: str | None,
                       *, default: bool) -> Network:
        if self.rows.network(name) is not None:
            raise Conflict(f"network {name!r} already exists")
        existing = {n.name: ipaddress.IPv4Network(n.subnet) for n in self.rows.networks()}
        if subnet is not None:
            net = ipam.parse_subnet(subnet)
            for other, onet in existing.items():
                if net.overlaps(onet):
                    raise Conflict(f"subnet {net} overlaps network {other!r} ({onet})")
            route = ipam.overlapping(net, ipam.host_routes())
            if route is not None:
                raise Conflict(f"subnet {net} overlaps the host route {route}")
        else:
            if gateway is not None:
                raise BadInput("--gateway needs --subnet")
            net = ipam.choose_subnet(default, existing.values())
        gw = ipam.parse_gateway(net, gateway)
        import uuid

        nid = uuid.uuid4().hex
        network = Network(name=name, id=nid, bridge="vmb-" + nid[:8], subnet=str(net),
                          gateway=str(gw), default=default, created=time.time())
        self.rows.insert_network(network)
        try:
            self.host.ensure_bridge(network)
            self.host.apply_nat()
        except BaseException:
            try:
                self.host.delete_link(network.bridge)
            except Exception as exc:  # noqa: BLE001 - the undo goes on; the error is raised
                diag.ignored(__name__, f"removing bridge {network.bridge} (undo)", exc)
            self.rows.delete_network(name)
            try:
                self.host.apply_nat()
            except Exception as exc:  # noqa: BLE001
                diag.ignored(__name__, "re-applying the NAT rules (undo)", exc)
            raise
        return network

    def ensure_default(self) -> Network:
        """The default network (``bridge``, 10.88.0.0/16 unless the host
        already routes that), created on first use."""
        net = self.rows.network(DEFAULT_NETWORK)
        if net is not None:
            return net
        with self.host.locked():
            net = self.rows.network(DEFAULT_NETWORK)
            if net is not None:
                return net
            return self._create_locked(DEFAULT_NETWORK, None, None, default=True)

    def list(self) -> list[Network]:
        return self.rows.networks(with_containers=True)

    def inspect(self, name: str) -> Network:
        net = self.rows.network(name, with_containers=True)
        if net is None:
            raise NotFound(f"network {name!r} does not exist")
        return net

    def remove(self, name: str) -> None:
        """Remove an unused network; refuses while any container is attached
        or holds a lease on it (stopped containers keep their address)."""
        with self.host.locked():
            net = self.rows.network(name)
            if net is None:
                raise NotFound(f"network {name!r} does not exist")
            users = self.rows.users(name)
            if users:
                shown = ", ".join(u[:12] for u in users[:5]) + (" ..." if len(users) > 5 else "")
                raise Conflict(f"network {name!r} is in use by {len(users)} container(s): {shown}")
            self.rows.delete_network(name)
            self.host.delete_link(net.bridge)
            self.host.apply_nat()

    # -- containers --------------------------------------------------------------
    def connect(self, container_id: str, network: str | None, hostname: str,
                ip: str | None = None, ports: PortsArg = None,
                aliases: Iterable[str] = (),
                extra_hosts: Iterable[tuple[str, str]] = ()) -> Attachment:
        """Give a container its network namespace and return what to start it with.

        ``network``: a network name (``None``: the default network), ``"none"``
        (a namespace with only lo up) or ``"host"`` (no namespace).  ``ip``
        asks for an address; otherwise the container's lease is reused, or
        the lowest free address is leased.  ``ports=None`` publishes the
        ports remembered on the lease (what takeover() moved), a list
        replaces them.  Connecting an already connected container first
        tears its old attachment down (its lease stays).  ``extra_hosts``:
        ``(host, ip)`` lines the container's /etc/hosts keeps (``--add-host``).
        """
        cid = _check_cid(container_id)
        hostname = check_hostname(hostname)
        aliases = tuple(check_hostname(a) for a in aliases)
        extra = tuple(_check_extra_host(h, ip) for h, ip in extra_hosts)
        specs = None if ports is None else _parse_ports(ports)
        network = DEFAULT_NETWORK if network is None else network
        if network in SPECIAL:
            if specs:
                raise BadInput(f"published ports need a bridge network, not {network!r}")
            if ip is not None:
                raise BadInput(f"--ip needs a bridge network, not {network!r}")
            with self.host.locked():
                self.attachments.teardown(cid)
                return self.attachments.connect_special(cid, network, hostname, aliases,
                                                          extra)
        if network == DEFAULT_NETWORK:
            self.ensure_default()
        with self.host.locked():
            return self.attachments.connect_bridge(cid, network, hostname, ip, specs, aliases,
                                                     extra)

    def stage(self, container_id: str, network: str | None, ip: str) -> bool:
        """Make a container's namespace and veth ahead of its start, ``ip``
        configured inside although another container may hold it still (an
        upgrade's successor, while the old version serves; its lease moves
        with :meth:`takeover` at the switch): the :meth:`connect` that
        follows with that address only puts the veth on the bridge.  The
        calling process owns what is staged until then: :meth:`unstage`,
        :meth:`disconnect` and, once that process died, :meth:`reconcile`
        remove it.  False (nothing made) when there is nothing to stage: a
        special network, a network that does not exist, an address outside
        it, a container already connected."""
        from ..records import proc_start_time

        cid = _check_cid(container_id)
        network = DEFAULT_NETWORK if network is None else network
        if network in SPECIAL:
            return False
        me = os.getpid()
        with self.host.locked():
            return self.attachments.stage(cid, network, ip, (me, proc_start_time(me)))

    def unstage(self, container_id: str) -> None:
        """Remove what :meth:`stage` made for a container (idempotent)."""
        cid = _check_cid(container_id)
        with self.host.locked():
            self.attachments.unstage(cid)

    def ready_for_teardown(self) -> None:
        """Import what :meth:`disconnect` needs (the netlink messages;
        subprocess, for nft) ahead of it."""
        import subprocess  # noqa: F401

        from . import links  # noqa: F401

    def begin_disconnect(self, container_id: str) -> Callable[[], None]:
        """:meth:`disconnect` in two halves, under the network lock from this
        call until the returned function has run: the published ports start
        leaving the nft table (a commit that removes them waits ~15 ms for
        an RCU grace period) while the caller does other work (a container's
        teardown unmounts meanwhile); the function finishes the disconnect."""
        cid = _check_cid(container_id)
        held = contextlib.ExitStack()
        held.enter_context(self.host.locked())
        try:
            finish = self.attachments.begin_teardown(self.rows.attachment(cid))
            self.attachments.unstage(cid)
        except BaseException:
            held.close()
            raise

        def done() -> None:
            with held:
                finish()

        return done

    def disconnect(self, container_id: str, release: bool = False) -> None:
        """Stop: remove the container's veth, namespace, hosts file and port
        rules (and what :meth:`stage` made).  ``release=True`` (container
        removed) also frees its leases.  Idempotent: an unknown container is
        not an error."""
        cid = _check_cid(container_id)
        with self.host.locked():
            self.attachments.teardown(cid)
            self.attachments.unstage(cid)
            if release:
                nets = [lease.network for lease in self.rows.leases(container_id=cid)]
                self.rows.release([cid])
                for n in nets:
                    self.host.refresh_hosts(n)

    def takeover(self, old_container_id: str, new_container_id: str) -> builtins.list[Lease]:
        """Hand the old container's leases (address, hostname, published ports)
        to its successor.  The old container is disconnected first if it is
        still connected; the successor must not be connected.  Afterwards
        ``connect(new, network, hostname)`` (``ip`` and ``ports`` left None)
        brings the successor up on the same address, MAC and ports."""
        old = _check_cid(old_container_id)
        new = _check_cid(new_container_id)
        if old == new:
            raise BadInput("takeover needs two different containers")
        with self.host.locked():
            if self.rows.attachment(new) is not None:
                raise Conflict(f"container {new[:12]} is connected: disconnect it before takeover")
            self.attachments.teardown(old)
            self.rows.move_leases(old, new)
            return self.leases(container_id=new)

    def attachment(self, container_id: str) -> Attachment | None:
        """What is live for a container now (for ``ps`` / ``inspect``)."""
        rec = self.rows.attachment(container_id)
        return None if rec is None else rec.attachment

    def leases(self, network: str | None = None,
               container_id: str | None = None) -> builtins.list[Lease]:
        return self.rows.leases(network, container_id)

    def reconcile(self, alive: Callable[[str], bool] | None = None) -> dict[str, builtins.list[str]]:
        """Remove what crashed supervisors left: attachments never finished or
        whose namespace is gone (reboot), links and namespaces no row names,
        and — when ``alive(container_id)`` says a container no longer exists —
        its attachment and leases.  Then re-create missing bridges, rewrite
        hosts files and the nft table from the database."""
        from .reconcile import reconcile_locked

        with self.host.locked():
            return reconcile_locked(self.rows, self.host, self.attachments, alive)

    def nat_rules(self) -> str:
        """The live nft table of this store ('' when absent)."""
        return self.host.nat_rules()


def _check_cid(cid: str) -> str:
    if not isinstance(cid, str) or not re.fullmatch(CID_RE, cid):
        raise BadInput(f"container id {cid!r} is invalid")
    return cid


def _parse_ports(items: Iterable[PortSpec | str]) -> tuple[PortSpec, ...]:
    return tuple(it if isinstance(it, PortSpec) else PortSpec.parse(str(it)) for it in items)


def _sweep(store: Store) -> None:
    """Store sweeper: finish what a crash left, cheaply when nothing did
    (pyroute2 and the reconciliation are only imported when there is work)."""
    if not sweep_needed(store):
        return
    try:
        with store.lock("network", blocking=False):
            from .reconcile import reconcile_locked

            mgr = NetworkManager(store)
            with mgr.host.session():
                reconcile_locked(mgr.rows, mgr.host, mgr.attachments, None)
    except BlockingIOError:
        return  # someone is changing networks right now; they finish their own work
    except Exception as exc:  # never make every command fail over a network sweep
        import sys

        msg = " ".join(str(exc).split())
        sys.stderr.write(f"volmerge: warning: network reconcile failed: {msg}\n")


register_sweeper("networks", _sweep)


def _check_extra_host(host: str, ip: str) -> tuple[str, str]:
    """A checked ``(host, ip)``: nothing but a name and an address reaches a hosts file."""
    try:
        if "%" in ip:  # a zone id may hold any character
            raise ValueError(ip)
        return check_hostname(host), str(ipaddress.ip_address(ip))
    except ValueError:
        raise BadInput(f"bad extra host {host}:{ip}: expected an IP address") from None
