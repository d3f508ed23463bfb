"""NetworkManager: bridge networks, container attachments, leases, ports.

One flock (``locks/network.lock``) serialises every change, across processes;
the state database is the truth, and links, namespaces, hosts files and the
nft table are derived from it (reconcile() re-derives them after a crash).

Order of work (architecture.md, principle 4): an attachment row is written ``pending``
before any link or namespace exists, flipped to ``up`` when all of it
exists, and deleted only after all of it is gone.  A crash therefore leaves
a row that names what to undo, and reconcile() (also run as a store sweeper
when such rows exist) undoes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BadInput, Conflict, NotFound
from ..store import Store, register_sweeper
from . import hosts, ipam, netns, ports
from .model import Attachment, Lease, Network, PortSpec, check_hostname, check_name
from .schema import COMPONENT, MIGRATIONS

DEFAULT_NETWORK = "bridge"
SPECIAL = ("none", "host")
CID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

PortsArg = Iterable[PortSpec | str] | None


class NetworkManager:
    """Networks of one store root.  See docs/network.md for the
    upgrade sequence that uses :meth:`takeover`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(COMPONENT, MIGRATIONS)
        root = str(store.root)
        self.tag = hashlib.sha256(root.encode()).hexdigest()[:8]
        self.table = ports.table_name(root)
        self.ns_dir = store.path("network", "ns")
        self.hosts_dir = store.path("network", "hosts")
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        self._ipr: Any = None  # one netlink socket per locked operation
        self._depth = 0

    # -- plumbing ------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        return self.store.db

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.store.lock("network"):
            with self._session():
                yield

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
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
    def _host(self) -> Iterator[Any]:
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

    def _alias(self, kind: str, name: str) -> str:
        return f"volmerge:{self.tag}:{kind}:{name}"[:255]

    def _veth_name(self, cid: str) -> str:
        return "vmh-" + hashlib.sha256(f"{self.tag}:{cid}".encode()).hexdigest()[:10]

    # -- networks --------------------------------------------------------------
    def create(self, name: str, subnet: str | None = None, gateway: str | None = None) -> Network:
        """A bridge network with its own subnet (chosen from the pool when not
        given); refuses a taken name and a subnet overlapping another network
        or a route of the host."""
        check_name(name)
        with self._locked():
            return self._create_locked(name, subnet, gateway, default=False)

    def _create_locked(self, name: str, subnet: str | None, gateway: str | None,
                       *, default: bool) -> Network:
        if self._row(name) is not None:
            raise Conflict(f"network {name!r} already exists")
        rows = self.db.execute("SELECT name, subnet FROM networks").fetchall()
        existing = {r["name"]: ipaddress.IPv4Network(r["subnet"]) for r in rows}
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
        nid = uuid.uuid4().hex
        bridge = "vmb-" + nid[:8]
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO networks(name, id, bridge, subnet, gateway, is_default, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, nid, bridge, str(net), str(gw), int(default), time.time()),
            )
        network = self._network(self._row(name))
        try:
            self._ensure_bridge(network)
            self._apply_nat()
        except BaseException:
            with contextlib.suppress(Exception), self._host() as ipr:
                from . import links

                links.delete(ipr, bridge)
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM networks WHERE name = ?", (name,))
            with contextlib.suppress(Exception):
                self._apply_nat()
            raise
        return network

    def ensure_default(self) -> Network:
        """The default network (``bridge``, 10.88.0.0/16 unless the host
        already routes that), created on first use."""
        row = self._row(DEFAULT_NETWORK)
        if row is not None:
            return self._network(row)
        with self._locked():
            row = self._row(DEFAULT_NETWORK)
            if row is not None:
                return self._network(row)
            return self._create_locked(DEFAULT_NETWORK, None, None, default=True)

    def list(self) -> list[Network]:
        rows = self.db.execute("SELECT * FROM networks ORDER BY name").fetchall()
        return [self._network(r, with_containers=True) for r in rows]

    def inspect(self, name: str) -> Network:
        row = self._row(name)
        if row is None:
            raise NotFound(f"network {name!r} does not exist")
        return self._network(row, with_containers=True)

    def remove(self, name: str) -> None:
        """Remove an unused network; refuses while any container is attached
        or holds a lease on it (stopped containers keep their address)."""
        with self._locked():
            row = self._row(name)
            if row is None:
                raise NotFound(f"network {name!r} does not exist")
            users = sorted(
                {r[0] for r in self.db.execute(
                    "SELECT container_id FROM network_attachments WHERE network = ?"
                    " UNION SELECT container_id FROM network_leases WHERE network = ?",
                    (name, name))}
            )
            if users:
                shown = ", ".join(u[:12] for u in users[:5]) + (" ..." if len(users) > 5 else "")
                raise Conflict(f"network {name!r} is in use by {len(users)} container(s): {shown}")
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM networks WHERE name = ?", (name,))
            from . import links

            with self._host() as ipr:
                links.delete(ipr, row["bridge"])
            self._apply_nat()

    # -- containers --------------------------------------------------------------
    def connect(self, container_id: str, network: str | None, hostname: str,
                ip: str | None = None, ports: PortsArg = None,
                aliases: Iterable[str] = ()) -> Attachment:
        """Give a container its network namespace and return what to start it with.

        ``network``: a network name (``None``: the default network), ``"none"``
        (a namespace with only lo up) or ``"host"`` (no namespace).  ``ip``
        asks for an address; otherwise the container's lease is reused, or
        the lowest free address is leased.  ``ports=None`` publishes the
        ports remembered on the lease (what takeover() moved), a list
        replaces them.  Connecting an already connected container first
        tears its old attachment down (its lease stays).
        """
        cid = _check_cid(container_id)
        hostname = check_hostname(hostname)
        aliases = tuple(check_hostname(a) for a in aliases)
        specs = None if ports is None else _parse_ports(ports)
        network = DEFAULT_NETWORK if network is None else network
        if network in SPECIAL:
            if specs:
                raise BadInput(f"published ports need a bridge network, not {network!r}")
            if ip is not None:
                raise BadInput(f"--ip needs a bridge network, not {network!r}")
            with self._locked():
                self._teardown_cid(cid)
                return self._connect_special(cid, network, hostname, aliases)
        if network == DEFAULT_NETWORK:
            self.ensure_default()
        with self._locked():
            return self._connect_bridge(cid, network, hostname, ip, specs, aliases)

    def disconnect(self, container_id: str, release: bool = False) -> None:
        """Stop: remove the container's veth, namespace, hosts file and port
        rules.  ``release=True`` (container removed) also frees its leases.
        Idempotent: an unknown container is not an error."""
        cid = _check_cid(container_id)
        with self._locked():
            self._teardown_cid(cid)
            if release:
                nets = [r[0] for r in self.db.execute(
                    "SELECT network FROM network_leases WHERE container_id = ?", (cid,))]
                with self.store.transaction() as conn:
                    conn.execute("DELETE FROM network_leases WHERE container_id = ?", (cid,))
                for n in nets:
                    self._refresh_hosts(n)

    def takeover(self, old_container_id: str, new_container_id: str) -> list[Lease]:
        """Hand the old container's leases (address, hostname, published ports)
        to its successor.  The old container is disconnected first if it is
        still connected; the successor must not be connected.  Afterwards
        ``connect(new, network, hostname)`` (``ip`` and ``ports`` left None)
        brings the successor up on the same address, MAC and ports."""
        old = _check_cid(old_container_id)
        new = _check_cid(new_container_id)
        if old == new:
            raise BadInput("takeover needs two different containers")
        with self._locked():
            if self._attachment_row(new) is not None:
                raise Conflict(f"container {new[:12]} is connected: disconnect it before takeover")
            self._teardown_cid(old)
            with self.store.transaction() as conn:
                leases = conn.execute(
                    "SELECT network FROM network_leases WHERE container_id = ?", (old,)
                ).fetchall()
                for (net,) in leases:
                    conn.execute(
                        "DELETE FROM network_leases WHERE network = ? AND container_id = ?",
                        (net, new),
                    )
                conn.execute(
                    "UPDATE network_leases SET container_id = ? WHERE container_id = ?", (new, old)
                )
            return self.leases(container_id=new)

    def attachment(self, container_id: str) -> Attachment | None:
        """What is live for a container now (for ``ps`` / ``inspect``)."""
        row = self._attachment_row(container_id)
        return None if row is None else _attachment(row)

    def leases(self, network: str | None = None, container_id: str | None = None) -> list[Lease]:
        sql, args = "SELECT * FROM network_leases WHERE 1", []
        if network is not None:
            sql += " AND network = ?"
            args.append(network)
        if container_id is not None:
            sql += " AND container_id = ?"
            args.append(container_id)
        rows = self.db.execute(sql + " ORDER BY network, ip", args).fetchall()
        return [_lease(r) for r in rows]

    def reconcile(self, alive: Callable[[str], bool] | None = None) -> dict[str, list[str]]:
        """Remove what crashed supervisors left: attachments never finished or
        whose namespace is gone (reboot), links and namespaces no row names,
        and — when ``alive(container_id)`` says a container no longer exists —
        its attachment and leases.  Then re-create missing bridges, rewrite
        hosts files and the nft table from the database."""
        with self._locked():
            return self._reconcile_locked(alive)

    # -- internals: connect ------------------------------------------------------
    def _connect_special(self, cid: str, network: str, hostname: str,
                         aliases: tuple[str, ...]) -> Attachment:
        hosts_path = str(self.hosts_dir / cid)
        nspath = None if network == "host" else str(self.ns_dir / cid)
        self._insert_attachment(cid, network, nspath, None, None, None, None, None,
                                hostname, aliases, hosts_path, ())
        try:
            if nspath is not None:
                from . import links

                netns.remove(nspath)
                sock = netns.create(Path(nspath))
                ipr = links.open_in(sock)
                try:
                    links.configure_inside(ipr, None, None, None)
                finally:
                    ipr.close()
                hosts.write_in_place(hosts_path, hosts.render((None, hostname, aliases), ()))
            else:
                hosts.write_in_place(hosts_path, hosts.render_host(hostname))
            self._mark_up(cid)
        except BaseException:
            self._teardown_row(self._attachment_row(cid))
            raise
        return _attachment(self._attachment_row(cid))

    def _connect_bridge(self, cid: str, name: str, hostname: str, ip: str | None,
                        specs: tuple[PortSpec, ...] | None,
                        aliases: tuple[str, ...]) -> Attachment:
        row = self._row(name)
        if row is None:
            raise NotFound(f"network {name!r} does not exist")
        net = self._network(row)
        subnet = ipaddress.IPv4Network(net.subnet)
        gateway = ipaddress.IPv4Address(net.gateway)
        want = None if ip is None else ipam.check_address(subnet, gateway, ip)
        lease = self._lease_row(name, cid)
        publish = specs if specs is not None else (
            tuple(_ports(lease["ports"])) if lease is not None else ())
        self._check_ports(cid, publish)
        if want is not None:
            holder = self.db.execute(
                "SELECT container_id FROM network_leases WHERE network = ? AND ip = ?",
                (name, str(want)),
            ).fetchone()
            if holder is not None and holder[0] != cid:
                raise Conflict(f"address {want} is taken by container {holder[0][:12]}")

        # Validation done: from here on the host changes.
        self._teardown_cid(cid)
        new_lease = lease is None
        with self.store.transaction() as conn:
            if lease is None:
                if want is None:
                    taken = [r[0] for r in conn.execute(
                        "SELECT ip FROM network_leases WHERE network = ?", (name,))]
                    want = ipam.allocate(subnet, gateway, taken)
                conn.execute(
                    "INSERT INTO network_leases(network, ip, container_id, hostname, aliases,"
                    " ports, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, str(want), cid, hostname, json.dumps(list(aliases)),
                     _ports_json(publish), time.time()),
                )
            else:
                addr = str(want) if want is not None else lease["ip"]
                conn.execute(
                    "UPDATE network_leases SET ip = ?, hostname = ?, aliases = ?, ports = ?"
                    " WHERE network = ? AND container_id = ?",
                    (addr, hostname, json.dumps(list(aliases)), _ports_json(publish), name, cid),
                )
                want = ipaddress.IPv4Address(addr)
            addr = str(want)
            mac = _mac_for(addr)
            nspath = str(self.ns_dir / cid)
            hosts_path = str(self.hosts_dir / cid)
            veth = self._veth_name(cid)
            # same transaction: one fsync'd commit for the lease and the marker
            self._insert_attachment(cid, name, nspath, veth, addr, net.gateway,
                                    subnet.prefixlen, mac, hostname, aliases, hosts_path,
                                    publish)
        from . import links

        try:
            created = self._ensure_bridge(net)
            netns.remove(nspath)  # a pin no row named (crash): ours to replace, under the lock
            sock = netns.create(Path(nspath))
            try:
                fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    with self._host() as ipr:
                        links.add_veth(ipr, veth, net.bridge, fd, mac, self._alias("veth", cid))
                finally:
                    os.close(fd)
                inside = links.open_in(sock)
                sock = None
                try:
                    links.configure_inside(inside, addr, subnet.prefixlen, net.gateway)
                finally:
                    inside.close()
            finally:
                if sock is not None:
                    sock.close()
            self._refresh_hosts(name)
            if created or (publish and not ports.add_elements(
                    self.table, [ports.NatPort(p, addr, net.bridge) for p in publish])):
                self._apply_nat()
            self._mark_up(cid)
        except BaseException:
            self._teardown_row(self._attachment_row(cid))
            if new_lease:
                with self.store.transaction() as conn:
                    conn.execute(
                        "DELETE FROM network_leases WHERE network = ? AND container_id = ?",
                        (name, cid),
                    )
            raise
        return _attachment(self._attachment_row(cid))

    def _check_ports(self, cid: str, specs: tuple[PortSpec, ...]) -> None:
        for i, a in enumerate(specs):
            for b in specs[i + 1:]:
                if a.clashes(b):
                    raise Conflict(f"ports {a} and {b} publish the same host port")
        if not specs:
            return
        for r in self.db.execute(
            "SELECT container_id, ports FROM network_attachments WHERE container_id != ?", (cid,)
        ):
            for theirs in _ports(r["ports"]):
                for mine in specs:
                    if mine.clashes(theirs):
                        raise Conflict(
                            f"port {mine.host_ip}:{mine.host_port}/{mine.proto} is already"
                            f" published by container {r['container_id'][:12]}"
                        )
        for mine in specs:
            if not ports.host_port_free(mine):
                raise Conflict(
                    f"port {mine.host_ip}:{mine.host_port}/{mine.proto} is in use by a host process"
                )

    def _ensure_bridge(self, net: Network) -> bool:
        from . import links

        with self._host() as ipr:
            created = links.ensure_bridge(ipr, net.bridge, net.gateway, net.prefixlen,
                                          self._alias("bridge", net.name))
        links.sysctl("net/ipv4/ip_forward", "1")
        return created

    def _insert_attachment(self, cid: str, network: str, nspath: str | None, veth: str | None,
                           ip: str | None, gateway: str | None, prefixlen: int | None,
                           mac: str | None, hostname: str, aliases: tuple[str, ...],
                           hosts_path: str, publish: tuple[PortSpec, ...]) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO network_attachments(container_id, network, state, netns_path,"
                " host_veth, ip, gateway, prefixlen, mac, hostname, aliases, hosts_path, ports,"
                " created) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, network, nspath, veth, ip, gateway, prefixlen, mac, hostname,
                 json.dumps(list(aliases)), hosts_path, _ports_json(publish), time.time()),
            )

    def _mark_up(self, cid: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE network_attachments SET state = 'up' WHERE container_id = ?", (cid,))

    # -- internals: teardown -------------------------------------------------------
    def _teardown_cid(self, cid: str) -> None:
        row = self._attachment_row(cid)
        if row is not None:
            self._teardown_row(row)

    def _teardown_row(self, row: sqlite3.Row | None) -> None:
        """Undo one attachment; idempotent, so a crash half-way is finished
        by the next call.  The row goes last."""
        if row is None:
            return
        from . import links

        if row["host_veth"]:
            with self._host() as ipr:
                links.delete(ipr, row["host_veth"])
        if row["netns_path"]:
            netns.remove(row["netns_path"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(row["hosts_path"])
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM network_attachments WHERE container_id = ?",
                         (row["container_id"],))
        if _ports(row["ports"]):
            self._apply_nat()
        if row["network"] not in SPECIAL:
            self._refresh_hosts(row["network"])

    # -- internals: derived state ------------------------------------------------
    def _refresh_hosts(self, network: str) -> None:
        rows = self.db.execute(
            "SELECT ip, hostname, aliases, hosts_path FROM network_attachments"
            " WHERE network = ? AND ip IS NOT NULL", (network,),
        ).fetchall()
        peers = [(r["ip"], r["hostname"], json.loads(r["aliases"])) for r in rows]
        for r in rows:
            own = (r["ip"], r["hostname"], json.loads(r["aliases"]))
            hosts.write_in_place(r["hosts_path"], hosts.render(own, peers))

    def _apply_nat(self) -> None:
        nets = [ports.NatNetwork(r["bridge"], r["subnet"])
                for r in self.db.execute("SELECT bridge, subnet FROM networks")]
        pts = []
        for r in self.db.execute(
            "SELECT a.ip, a.ports, n.bridge FROM network_attachments a"
            " JOIN networks n ON n.name = a.network WHERE a.ip IS NOT NULL"
        ):
            for spec in _ports(r["ports"]):
                pts.append(ports.NatPort(spec, r["ip"], r["bridge"]))
        ports.apply(ports.render(self.table, nets, pts))

    def nat_rules(self) -> str:
        """The live nft table of this store ('' when absent)."""
        return ports.listing(self.table)

    def _reconcile_locked(self, alive: Callable[[str], bool] | None) -> dict[str, list[str]]:
        from . import links

        report: dict[str, list[str]] = {"attachments": [], "leases": [], "links": [],
                                        "netns": [], "hosts": []}
        with self._host() as ipr:
            present = {li.name: li for li in links.links(ipr)}
        for row in self.db.execute("SELECT * FROM network_attachments").fetchall():
            cid = row["container_id"]
            stale = row["state"] != "up"
            stale = stale or (row["netns_path"] is not None and not netns.is_pinned(row["netns_path"]))
            stale = stale or (row["host_veth"] is not None and row["host_veth"] not in present)
            if not stale and alive is not None:
                stale = not alive(cid)
            if stale:
                self._teardown_row(row)
                report["attachments"].append(cid)
        if alive is not None:
            dead = sorted({r[0] for r in self.db.execute(
                "SELECT container_id FROM network_leases")} - {
                r[0] for r in self.db.execute("SELECT container_id FROM network_attachments")})
            dead = [c for c in dead if not alive(c)]
            if dead:
                with self.store.transaction() as conn:
                    conn.executemany("DELETE FROM network_leases WHERE container_id = ?",
                                     [(c,) for c in dead])
                report["leases"] = dead
        rows = self.db.execute("SELECT * FROM network_attachments").fetchall()
        veths = {r["host_veth"] for r in rows if r["host_veth"]}
        bridges = {r["bridge"] for r in self.db.execute("SELECT bridge FROM networks")}
        mine = f"volmerge:{self.tag}:"
        with self._host() as ipr:
            for li in links.links(ipr):
                if not (li.alias or "").startswith(mine):
                    continue
                if (li.kind == "veth" and li.name not in veths) or (
                    li.kind == "bridge" and li.name not in bridges
                ):
                    links.delete(ipr, li.name)
                    report["links"].append(li.name)
        nspaths = {r["netns_path"] for r in rows if r["netns_path"]}
        for entry in sorted(os.listdir(self.ns_dir)):
            p = str(self.ns_dir / entry)
            if p not in nspaths:
                netns.remove(p)
                report["netns"].append(entry)
        hpaths = {r["hosts_path"] for r in rows}
        for entry in sorted(os.listdir(self.hosts_dir)):
            p = str(self.hosts_dir / entry)
            if p not in hpaths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
                report["hosts"].append(entry)
        for net in self.list():
            self._ensure_bridge(net)
            self._refresh_hosts(net.name)
        self._apply_nat()
        return report

    # -- internals: rows -------------------------------------------------------------
    def _row(self, name: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM networks WHERE name = ?", (name,)).fetchone()

    def _lease_row(self, network: str, cid: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM network_leases WHERE network = ? AND container_id = ?", (network, cid)
        ).fetchone()

    def _attachment_row(self, cid: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM network_attachments WHERE container_id = ?", (cid,)
        ).fetchone()

    def _network(self, row: sqlite3.Row, with_containers: bool = False) -> Network:
        containers: tuple[dict[str, Any], ...] = ()
        if with_containers:
            attached = {r["container_id"]: r for r in self.db.execute(
                "SELECT * FROM network_attachments WHERE network = ?", (row["name"],))}
            out = []
            for lease in self.db.execute(
                "SELECT * FROM network_leases WHERE network = ? ORDER BY ip", (row["name"],)
            ):
                a = attached.get(lease["container_id"])
                out.append({
                    "container_id": lease["container_id"],
                    "hostname": lease["hostname"],
                    "ip": lease["ip"],
                    "state": "connected" if a is not None else "leased",
                    "ports": [str(p) for p in _ports(a["ports"] if a else lease["ports"])],
                })
            containers = tuple(out)
        return Network(
            name=row["name"], id=row["id"], bridge=row["bridge"], subnet=row["subnet"],
            gateway=row["gateway"], default=bool(row["is_default"]), created=row["created"],
            containers=containers,
        )


# -- module helpers ------------------------------------------------------------------

def _mac_for(ip: str) -> str:
    """A locally administered MAC derived from the address (docker's 02:42
    habit): a successor taking over an address also keeps the MAC, so the
    neighbours' ARP caches stay right across an upgrade."""
    return "02:42:" + ":".join(f"{x:02x}" for x in ipaddress.IPv4Address(ip).packed)


def _check_cid(cid: str) -> str:
    if not isinstance(cid, str) or not CID_RE.fullmatch(cid):
        raise BadInput(f"container id {cid!r} is invalid")
    return cid


def _parse_ports(items: Iterable[PortSpec | str]) -> tuple[PortSpec, ...]:
    out = []
    for it in items:
        out.append(it if isinstance(it, PortSpec) else PortSpec.parse(str(it)))
    return tuple(out)


def _ports(text: str | None) -> list[PortSpec]:
    return [PortSpec.from_dict(d) for d in json.loads(text or "[]")]


def _ports_json(specs: Iterable[PortSpec]) -> str:
    return json.dumps([p.to_dict() for p in specs])


def _lease(r: sqlite3.Row) -> Lease:
    return Lease(network=r["network"], ip=r["ip"], container_id=r["container_id"],
                 hostname=r["hostname"], aliases=tuple(json.loads(r["aliases"])),
                 ports=tuple(_ports(r["ports"])))


def _attachment(r: sqlite3.Row | None) -> Attachment:
    assert r is not None
    return Attachment(
        netns_path=r["netns_path"], ip=r["ip"], gateway=r["gateway"], prefixlen=r["prefixlen"],
        hosts_path=r["hosts_path"], ports=tuple(_ports(r["ports"])), network=r["network"],
        container_id=r["container_id"], hostname=r["hostname"], mac=r["mac"],
        host_veth=r["host_veth"], aliases=tuple(json.loads(r["aliases"])),
    )


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _sweep(store: Store) -> None:
    """Store sweeper: finish what a crash left, cheaply when nothing did
    (one query; pyroute2 is only imported when there is work)."""
    try:
        have = store.db.execute(
            "SELECT version FROM schema_version WHERE component = ?", (COMPONENT,)
        ).fetchone()
    except sqlite3.Error:
        return
    if not have:
        return
    pending = store.db.execute(
        "SELECT 1 FROM network_attachments WHERE state != 'up' LIMIT 1").fetchone()
    if pending is None:
        # a namespace pin or hosts file no row names: a disconnect that ran in
        # another mount namespace, or a crash between its steps
        ns_dir, hosts_dir = store.path("network", "ns"), store.path("network", "hosts")
        files = {str(ns_dir / e) for e in _listdir(ns_dir)} | {
            str(hosts_dir / e) for e in _listdir(hosts_dir)}
        if not files:
            return
        known = set()
        for r in store.db.execute("SELECT netns_path, hosts_path FROM network_attachments"):
            known.update(p for p in r if p)
        if files <= known:
            return
    try:
        with store.lock("network", blocking=False):
            mgr = NetworkManager(store)
            with mgr._session():
                mgr._reconcile_locked(None)
    except BlockingIOError:
        return  # someone is changing networks right now; they finish their own work
    except Exception as exc:  # never make every command fail over a network sweep
        import sys

        msg = " ".join(str(exc).split())
        sys.stderr.write(f"volmerge: warning: network reconcile failed: {msg}\n")


register_sweeper("networks", _sweep)
