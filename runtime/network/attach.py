"""Containers attached to networks: a namespace, a veth into the bridge, an
address, a hosts file, published ports; and all of it undone.

Order of work (architecture.md, principle 4): an attachment row is written
``pending`` before any link or namespace exists, flipped to ``up`` when all
of it exists, and deleted only after all of it is gone.  A crash therefore
leaves a row that names what to undo (runtime/network/reconcile.py).
Every method here runs under the network lock (:meth:`Host.locked`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import Conflict, NotFound
from . import hosts, ipam, netns, ports
from .host import Host
from .model import Attachment, Lease, Network, PortSpec
from .rows import AttachmentRecord, NetworkRows, Staged

SPECIAL = ("none", "host")


def mac_for(ip: str) -> str:
    """A locally administered MAC derived from the address (docker's 02:42
    habit): a successor taking over an address also keeps the MAC, so the
    neighbours' ARP caches stay right across an upgrade."""
    return "02:42:" + ":".join(f"{x:02x}" for x in ipaddress.IPv4Address(ip).packed)


class Attachments:
    """Connecting and disconnecting the containers of one store."""

    def __init__(self, rows: NetworkRows, host: Host) -> None:
        self.rows = rows
        self.host = host
        self.store = rows.store

    # -- connect -----------------------------------------------------------------------
    def connect_special(self, cid: str, network: str, hostname: str,
                        aliases: tuple[str, ...],
                        extra_hosts: tuple[tuple[str, str], ...] = ()) -> Attachment:
        """``none`` (a namespace with only lo up) or ``host`` (no namespace)."""
        hosts_path = str(self.host.hosts_dir / cid)
        nspath = None if network == "host" else str(self.host.ns_dir / cid)
        att = Attachment(netns_path=nspath, ip=None, gateway=None, prefixlen=None,
                         hosts_path=hosts_path, network=network, container_id=cid,
                         hostname=hostname, aliases=aliases, extra_hosts=extra_hosts)
        with self.store.transaction() as conn:
            self.rows.insert_attachment(conn, att)
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
                hosts.write_in_place(hosts_path, hosts.render((None, hostname, aliases), (),
                                                                extra_hosts))
            else:
                hosts.write_in_place(hosts_path, hosts.render_host(hostname, extra_hosts))
            self.rows.mark_up(cid)
        except BaseException:
            self.teardown_record(self.rows.attachment(cid))
            raise
        return self._attached(cid)

    def connect_bridge(self, cid: str, name: str, hostname: str, ip: str | None,
                       specs: tuple[PortSpec, ...] | None,
                       aliases: tuple[str, ...],
                       extra_hosts: tuple[tuple[str, str], ...] = ()) -> Attachment:
        net = self.rows.network(name)
        if net is None:
            raise NotFound(f"network {name!r} does not exist")
        subnet = ipaddress.IPv4Network(net.subnet)
        gateway = ipaddress.IPv4Address(net.gateway)
        want = None if ip is None else ipam.check_address(subnet, gateway, ip)
        lease = self.rows.lease(name, cid)
        publish = specs if specs is not None else (lease.ports if lease is not None else ())
        self.check_ports(cid, publish)
        if want is not None:
            holder = self.rows.lease_holder(name, str(want))
            if holder is not None and holder != cid:
                raise Conflict(f"address {want} is taken by container {holder[:12]}")

        # Validation done: from here on the host changes.
        self.teardown(cid)
        new_lease = lease is None
        with self.store.transaction() as conn:
            if want is None:
                want = (ipaddress.IPv4Address(lease.ip) if lease is not None else
                        ipam.allocate(subnet, gateway, self.rows.leased_ips(conn, name)))
            addr = str(want)
            self.rows.put_lease(conn, Lease(name, addr, cid, hostname, aliases, publish),
                                new=new_lease)
            att = Attachment(netns_path=str(self.host.ns_dir / cid), ip=addr,
                             gateway=net.gateway, prefixlen=subnet.prefixlen,
                             hosts_path=str(self.host.hosts_dir / cid), ports=publish,
                             network=name, container_id=cid, hostname=hostname,
                             mac=mac_for(addr), host_veth=self.host.veth_name(cid),
                             aliases=aliases, extra_hosts=extra_hosts)
            # same transaction: one fsync'd commit for the lease and the marker
            self.rows.insert_attachment(conn, att)
        try:
            if self._plumb(att, net):
                self.rows.mark_up_adopted(cid)
            else:
                self.rows.mark_up(cid)
        except BaseException:
            self.teardown_record(self.rows.attachment(cid))
            self.unstage(cid)
            if new_lease:
                self.rows.delete_lease(name, cid)
            raise
        return self._attached(cid)

    def _plumb(self, att: Attachment, net: Network) -> bool:
        """The namespace, the veth pair, the address and routes inside, the
        peers' hosts files and the NAT rules of a bridge attachment.  A
        namespace staged for it (:meth:`stage`) is used as it is: only its
        veth's host end joins the bridge (True: it was)."""
        assert att.netns_path is not None and att.host_veth is not None and att.ip is not None
        created = self.host.ensure_bridge(net)
        bridge = net.bridge
        adopted = self._adopt_staged(att, net)
        if not adopted:
            self._plumb_afresh(att, net)
        self.host.refresh_hosts(att.network)
        if created or (att.ports and not self.host.add_nat_ports(
                [ports.NatPort(p, att.ip, bridge) for p in att.ports])):
            self.host.apply_nat()
        return adopted

    def _adopt_staged(self, att: Attachment, net: Network) -> bool:
        """Whether the container's staged namespace fits ``att`` and now
        serves it (the ``pending`` attachment row names the same namespace
        and veth; the staged row goes when it is marked up).  One that does
        not fit (another address) is removed."""
        from . import links

        s = self.rows.staged(att.container_id)
        if s is None:
            return False
        fits = (s.up and s.network == att.network and s.ip == att.ip and s.mac == att.mac
                and s.prefixlen == net.prefixlen and s.gateway == att.gateway
                and s.netns_path == att.netns_path and s.host_veth == att.host_veth
                and netns.is_pinned(s.netns_path))
        if fits:
            with self.host.netlink() as ipr:
                if links.enslave(ipr, s.host_veth, net.bridge,
                                 self.host.alias("veth", att.container_id)):
                    return True
        self.unstage_record(s)
        return False

    def _plumb_afresh(self, att: Attachment, net: Network) -> None:
        assert att.netns_path is not None and att.host_veth is not None and att.ip is not None
        self._make_netns(att.netns_path, att.host_veth, net.bridge, att.mac, att.container_id,
                         att.ip, net.prefixlen, att.gateway)

    def _make_netns(self, path: str, host_veth: str, bridge: str | None, mac: str | None,
                    cid: str, ip: str, prefixlen: int, gateway: str | None) -> None:
        """A namespace pinned at ``path`` with a veth whose host end joins
        ``bridge`` (None: stays down, off every bridge), eth0 addressed and
        routed inside."""
        from . import links

        netns.remove(path)  # a pin no row named (crash): ours to replace, under the lock
        sock = netns.create(Path(path))
        handed_over = False  # to the IPRoute inside, which closes it
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with self.host.netlink() as ipr:
                    links.add_veth(ipr, host_veth, bridge, fd, mac, self.host.alias("veth", cid))
            finally:
                os.close(fd)
            inside = links.open_in(sock)
            handed_over = True
            try:
                links.configure_inside(inside, ip, prefixlen, gateway)
            finally:
                inside.close()
        finally:
            if not handed_over:
                sock.close()

    # -- staged ahead of a start --------------------------------------------------------
    def stage(self, cid: str, name: str, ip: str, owner: tuple[int, str | None]) -> bool:
        """Make, ahead of the container's start, its namespace and veth with
        ``ip`` configured inside (the address may still be another
        container's: nothing reaches the bridge until the attachment adopts
        it).  False when there is nothing to stage: an attachment already
        exists, the network is gone, the address does not fit it."""
        net = self.rows.network(name)
        if net is None or self.rows.attachment(cid) is not None:
            return False
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        if addr not in ipaddress.IPv4Network(net.subnet):
            return False
        self.unstage(cid)
        s = Staged(container_id=cid, network=name, state="pending",
                   netns_path=str(self.host.ns_dir / cid), host_veth=self.host.veth_name(cid),
                   ip=str(addr), gateway=net.gateway, prefixlen=net.prefixlen,
                   mac=mac_for(str(addr)), owner_pid=owner[0], owner_start=owner[1])
        self.rows.insert_staged(s)
        try:
            self._make_netns(s.netns_path, s.host_veth, None, s.mac, cid, s.ip, s.prefixlen,
                             s.gateway)
            self.rows.mark_staged_up(cid)
        except BaseException:
            self.unstage_record(s)
            raise
        return True

    def unstage(self, cid: str) -> None:
        s = self.rows.staged(cid)
        if s is not None:
            self.unstage_record(s)

    def unstage_record(self, s: Staged) -> None:
        """Remove a staged namespace and its veth; idempotent, the row last.
        What an attachment row names too is left to that row's teardown."""
        att = self.rows.attachment(s.container_id)
        if att is None or att.attachment.netns_path != s.netns_path:
            self._remove_pair(s.host_veth, s.netns_path)
        self.rows.delete_staged(s.container_id)

    def _remove_pair(self, host_veth: str | None, netns_path: str | None) -> None:
        """A veth and the namespace holding its far end: the host end retired
        (off the bridge, down, renamed: links.retire), the pair left to go
        with the namespace, whose pin is removed; a veth without one deleted."""
        if host_veth and netns_path:
            self.host.retire_link(host_veth)
        elif host_veth:
            self.host.delete_link(host_veth)
        if netns_path:
            netns.remove(netns_path)

    def _attached(self, cid: str) -> Attachment:
        rec = self.rows.attachment(cid)
        assert rec is not None
        return rec.attachment

    def check_ports(self, cid: str, specs: tuple[PortSpec, ...]) -> None:
        """Conflict when two of ``specs``, or one and another container's or a
        host process's port, would catch the same packets."""
        for i, a in enumerate(specs):
            for b in specs[i + 1:]:
                if a.clashes(b):
                    raise Conflict(f"ports {a} and {b} publish the same host port")
        if not specs:
            return
        for rec in self.rows.attachments():
            other = rec.attachment
            if other.container_id == cid:
                continue
            for theirs in other.ports:
                for mine in specs:
                    if mine.clashes(theirs):
                        raise Conflict(
                            f"port {mine.host_ip}:{mine.host_port}/{mine.proto} is already"
                            f" published by container {other.container_id[:12]}"
                        )
        for mine in specs:
            if not ports.host_port_free(mine):
                raise Conflict(
                    f"port {mine.host_ip}:{mine.host_port}/{mine.proto} is in use by a host process"
                )

    # -- teardown ----------------------------------------------------------------------
    def teardown(self, cid: str) -> None:
        self.teardown_record(self.rows.attachment(cid))

    def teardown_record(self, rec: AttachmentRecord | None) -> None:
        """Undo one attachment; idempotent, so a crash half-way is finished
        by the next call.  The row goes last."""
        self.begin_teardown(rec)()

    def begin_teardown(self, rec: AttachmentRecord | None) -> Callable[[], None]:
        """:meth:`teardown_record` in two halves: this one starts taking the
        published ports out of the nft table (its commit waits for an RCU
        grace period, ~15 ms) and meanwhile takes the veth off the bridge,
        the namespace down and the row out; the function it returns waits
        for nft (rewriting the table from the rows if nft refused) and
        rewrites the network's hosts files.  Between the two, the caller
        may do other work (a container's teardown unmounts its root and
        volumes), under the network lock still."""
        if rec is None:
            return lambda: None
        a = rec.attachment
        removal = self.host.start_removing_nat_ports(a.ports) if a.ports else None
        try:
            self._remove_pair(a.host_veth, a.netns_path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(a.hosts_path)
            self.rows.delete_attachment(a.container_id)
        except BaseException:
            if removal is not None:
                removal.done()
            raise

        def finish() -> None:
            if removal is not None and not removal.done():
                self.host.apply_nat()  # the table rewritten whole from the rows
            if a.network not in SPECIAL:
                self.host.refresh_hosts(a.network)

        return finish
