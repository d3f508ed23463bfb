"""The network tables read and written as typed values (runtime.network.model).

:class:`NetworkRows` is the one place that knows the columns of
``networks``, ``network_leases`` and ``network_attachments``
(runtime/network/schema.py); the rest of the package gets and gives
:class:`~.model.Network`, :class:`~.model.Lease` and :class:`AttachmentRecord`.
Writes that must land together take a connection of the caller's
transaction (``conn``), so one commit holds e.g. a new lease and the
``pending`` attachment that names what to undo.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from ..store import DatabaseError, Store
from ..value import FrozenValue
from .model import Attachment, Lease, Network, PortSpec
from .schema import COMPONENT, STAGED_VERSION

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any


class AttachmentRecord(FrozenValue):
    """One ``network_attachments`` row: what is (to be) live for a container,
    and whether all of it exists yet (``up``) or a crash may have cut it
    short (``pending``)."""

    __slots__ = ("attachment", "state")
    if TYPE_CHECKING:
        attachment: Attachment
        state: str

    def __init__(self, attachment: Attachment, state: str) -> None:
        self._assign(locals())

    @property
    def up(self) -> bool:
        return self.state == "up"


class Staged(FrozenValue):
    """One ``network_staged`` row: a container's namespace and veth made
    ahead of its start, owned by the process that made them (``owner``:
    its pid and start time) until an attachment takes them over."""

    __slots__ = ("container_id", "network", "state", "netns_path", "host_veth", "ip",
                 "gateway", "prefixlen", "mac", "owner_pid", "owner_start")
    if TYPE_CHECKING:
        container_id: str
        network: str
        state: str
        netns_path: str
        host_veth: str
        ip: str
        gateway: str
        prefixlen: int
        mac: str
        owner_pid: int
        owner_start: str | None

    def __init__(self, container_id: str, network: str, state: str, netns_path: str,
                 host_veth: str, ip: str, gateway: str, prefixlen: int, mac: str,
                 owner_pid: int, owner_start: str | None) -> None:
        self._assign(locals())

    @property
    def up(self) -> bool:
        return self.state == "up"

    def owner_alive(self) -> bool:
        from ..records import pid_alive

        return pid_alive(self.owner_pid, self.owner_start)


_STAGED_COLUMNS = Staged.__slots__


def ports_from_json(text: str | None) -> tuple[PortSpec, ...]:
    return tuple(PortSpec.from_dict(d) for d in json.loads(text or "[]"))


def ports_to_json(specs: Iterable[PortSpec]) -> str:
    return json.dumps([p.to_dict() for p in specs])


def network_from_row(r: sqlite3.Row | dict[str, Any],
                     containers: tuple[dict[str, Any], ...] = ()) -> Network:
    return Network(name=r["name"], id=r["id"], bridge=r["bridge"], subnet=r["subnet"],
                   gateway=r["gateway"], default=bool(r["is_default"]), created=r["created"],
                   containers=containers)


def lease_from_row(r: sqlite3.Row | dict[str, Any]) -> Lease:
    return Lease(network=r["network"], ip=r["ip"], container_id=r["container_id"],
                 hostname=r["hostname"], aliases=tuple(json.loads(r["aliases"])),
                 ports=ports_from_json(r["ports"]))


def attachment_from_row(r: sqlite3.Row | dict[str, Any]) -> AttachmentRecord:
    return AttachmentRecord(Attachment(
        netns_path=r["netns_path"], ip=r["ip"], gateway=r["gateway"], prefixlen=r["prefixlen"],
        hosts_path=r["hosts_path"], ports=ports_from_json(r["ports"]), network=r["network"],
        container_id=r["container_id"], hostname=r["hostname"], mac=r["mac"],
        host_veth=r["host_veth"], aliases=tuple(json.loads(r["aliases"])),
        extra_hosts=tuple((str(h), str(ip)) for h, ip in json.loads(
            (r["extra_hosts"] if "extra_hosts" in r.keys() else None) or "[]")),
    ), r["state"])


class NetworkRows:
    """Queries and writes of the network tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def db(self) -> sqlite3.Connection:
        return self.store.db

    # -- networks ------------------------------------------------------------------
    def network(self, name: str, *, with_containers: bool = False) -> Network | None:
        r = self.db.execute("SELECT * FROM networks WHERE name = ?", (name,)).fetchone()
        if r is None:
            return None
        return network_from_row(r, self._containers(name) if with_containers else ())

    def networks(self, *, with_containers: bool = False) -> list[Network]:
        rows = self.db.execute("SELECT * FROM networks ORDER BY name").fetchall()
        return [network_from_row(r, self._containers(r["name"]) if with_containers else ())
                for r in rows]

    def _containers(self, name: str) -> tuple[dict[str, Any], ...]:
        """Who holds a lease on the network, and whether it is connected now."""
        attached = {a.attachment.container_id: a.attachment for a in self.attachments(name)}
        out = []
        for lease in self.leases(network=name):
            a = attached.get(lease.container_id)
            out.append({
                "container_id": lease.container_id,
                "hostname": lease.hostname,
                "ip": lease.ip,
                "state": "connected" if a is not None else "leased",
                "ports": [str(p) for p in (a.ports if a is not None else lease.ports)],
            })
        return tuple(out)

    def insert_network(self, net: Network) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO networks(name, id, bridge, subnet, gateway, is_default, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (net.name, net.id, net.bridge, net.subnet, net.gateway, int(net.default),
                 net.created),
            )

    def delete_network(self, name: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM networks WHERE name = ?", (name,))

    def users(self, network: str) -> list[str]:
        """Containers attached to or holding a lease on ``network``."""
        return sorted({r[0] for r in self.db.execute(
            "SELECT container_id FROM network_attachments WHERE network = ?"
            " UNION SELECT container_id FROM network_leases WHERE network = ?",
            (network, network))})

    # -- leases ----------------------------------------------------------------------
    def leases(self, network: str | None = None, container_id: str | None = None) -> list[Lease]:
        sql, args = "SELECT * FROM network_leases WHERE 1", []
        if network is not None:
            sql += " AND network = ?"
            args.append(network)
        if container_id is not None:
            sql += " AND container_id = ?"
            args.append(container_id)
        rows = self.db.execute(sql + " ORDER BY network, ip", args).fetchall()
        return [lease_from_row(r) for r in rows]

    def lease(self, network: str, cid: str) -> Lease | None:
        found = self.leases(network, cid)
        return found[0] if found else None

    def lease_holder(self, network: str, ip: str) -> str | None:
        r = self.db.execute("SELECT container_id FROM network_leases WHERE network = ? AND ip = ?",
                            (network, ip)).fetchone()
        return None if r is None else r[0]

    def leased_ips(self, conn: sqlite3.Connection, network: str) -> list[str]:
        return [r[0] for r in conn.execute("SELECT ip FROM network_leases WHERE network = ?",
                                           (network,))]

    def put_lease(self, conn: sqlite3.Connection, lease: Lease, *, new: bool) -> None:
        """Insert (``new``) or update the container's lease on its network."""
        aliases, ports = json.dumps(list(lease.aliases)), ports_to_json(lease.ports)
        if new:
            conn.execute(
                "INSERT INTO network_leases(network, ip, container_id, hostname, aliases,"
                " ports, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lease.network, lease.ip, lease.container_id, lease.hostname, aliases, ports,
                 time.time()))
        else:
            conn.execute(
                "UPDATE network_leases SET ip = ?, hostname = ?, aliases = ?, ports = ?"
                " WHERE network = ? AND container_id = ?",
                (lease.ip, lease.hostname, aliases, ports, lease.network, lease.container_id))

    def delete_lease(self, network: str, cid: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM network_leases WHERE network = ? AND container_id = ?",
                         (network, cid))

    def release(self, cids: Iterable[str]) -> None:
        """Delete every lease of these containers."""
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM network_leases WHERE container_id = ?",
                             [(c,) for c in cids])

    def move_leases(self, old: str, new: str) -> None:
        """``old``'s leases become ``new``'s (``new``'s own on those networks go)."""
        with self.store.transaction() as conn:
            nets = conn.execute("SELECT network FROM network_leases WHERE container_id = ?",
                                (old,)).fetchall()
            for (net,) in nets:
                conn.execute("DELETE FROM network_leases WHERE network = ? AND container_id = ?",
                             (net, new))
            conn.execute("UPDATE network_leases SET container_id = ? WHERE container_id = ?",
                         (new, old))

    def leaseholders(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT container_id FROM network_leases")}

    # -- attachments -------------------------------------------------------------------
    def attachment(self, cid: str) -> AttachmentRecord | None:
        r = self.db.execute("SELECT * FROM network_attachments WHERE container_id = ?",
                            (cid,)).fetchone()
        return None if r is None else attachment_from_row(r)

    def attachments(self, network: str | None = None) -> list[AttachmentRecord]:
        if network is None:
            rows = self.db.execute("SELECT * FROM network_attachments").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM network_attachments WHERE network = ?",
                                   (network,)).fetchall()
        return [attachment_from_row(r) for r in rows]

    def insert_attachment(self, conn: sqlite3.Connection, a: Attachment) -> None:
        """Written ``pending`` before any link or namespace exists."""
        conn.execute(
            "INSERT INTO network_attachments(container_id, network, state, netns_path,"
            " host_veth, ip, gateway, prefixlen, mac, hostname, aliases, hosts_path, ports,"
            " extra_hosts, created) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.container_id, a.network, a.netns_path, a.host_veth, a.ip, a.gateway, a.prefixlen,
             a.mac, a.hostname, json.dumps(list(a.aliases)), a.hosts_path,
             ports_to_json(a.ports), json.dumps([list(e) for e in a.extra_hosts]), time.time()),
        )

    def mark_up(self, cid: str) -> None:
        """All of the attachment exists now."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE network_attachments SET state = 'up' WHERE container_id = ?",
                         (cid,))

    def mark_up_adopted(self, cid: str) -> None:
        """:meth:`mark_up` of an attachment that adopted the container's
        staged namespace, whose row goes in the same commit."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE network_attachments SET state = 'up' WHERE container_id = ?",
                         (cid,))
            conn.execute("DELETE FROM network_staged WHERE container_id = ?", (cid,))

    def delete_attachment(self, cid: str) -> None:
        """Only once all of it is gone."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM network_attachments WHERE container_id = ?", (cid,))

    # -- staged namespaces ---------------------------------------------------------------
    def staged(self, cid: str) -> Staged | None:
        r = self.db.execute("SELECT * FROM network_staged WHERE container_id = ?",
                            (cid,)).fetchone()
        return None if r is None else Staged(*(r[k] for k in _STAGED_COLUMNS))

    def all_staged(self) -> list[Staged]:
        return [Staged(*(r[k] for k in _STAGED_COLUMNS))
                for r in self.db.execute("SELECT * FROM network_staged").fetchall()]

    def insert_staged(self, s: Staged) -> None:
        """Written ``pending`` before the namespace or the veth exists."""
        cols = ", ".join(_STAGED_COLUMNS)
        with self.store.transaction() as conn:
            conn.execute(f"INSERT INTO network_staged({cols}, created) VALUES "
                         f"({', '.join('?' * len(_STAGED_COLUMNS))}, ?)",
                         (*(getattr(s, k) for k in _STAGED_COLUMNS), time.time()))

    def mark_staged_up(self, cid: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE network_staged SET state = 'up' WHERE container_id = ?", (cid,))

    def delete_staged(self, cid: str) -> None:
        """Once what it names is gone, or an attachment row names it."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM network_staged WHERE container_id = ?", (cid,))


def sweep_needed(store: Store) -> bool:
    """Whether a crash left network work to finish: a ``pending`` attachment,
    or a namespace pin or hosts file no row names (a disconnect that ran in
    another mount namespace, or a crash between its steps).  A few queries
    and two directory listings, so every command can afford it."""
    try:
        have = store.db.execute(
            "SELECT version FROM schema_version WHERE component = ?", (COMPONENT,)
        ).fetchone()
    except DatabaseError:
        return False
    if not have:
        return False
    if store.db.execute(
            "SELECT 1 FROM network_attachments WHERE state != 'up' LIMIT 1").fetchone():
        return True
    known: set[str] = set()
    if have[0] >= STAGED_VERSION:
        rows = NetworkRows(store).all_staged()
        if any(not s.up or not s.owner_alive() for s in rows):
            return True
        known.update(s.netns_path for s in rows)
    ns_dir, hosts_dir = store.path("network", "ns"), store.path("network", "hosts")
    files = {str(ns_dir / e) for e in _listdir(ns_dir)} | {
        str(hosts_dir / e) for e in _listdir(hosts_dir)}
    if not files:
        return False
    for r in store.db.execute("SELECT netns_path, hosts_path FROM network_attachments"):
        known.update(p for p in r if p)
    return not files <= known


def _listdir(path: Any) -> list[str]:
    import os

    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
