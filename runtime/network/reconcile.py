"""Network reconciliation: the host made to match the rows again.

Removes what crashed supervisors left: attachments never finished or whose
namespace is gone (reboot), namespaces staged ahead of a start by a process
that died (or cut short), links and namespaces no row names, and — when
``alive(container_id)`` says a container no longer exists — its attachment
and leases.  Then re-creates missing bridges and rewrites hosts files and
the nft table from the database.  Also the store sweeper's work, when
:func:`~.rows.sweep_needed` says a crash left some; imported only then (or
by ``NetworkManager.reconcile``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from . import netns
from .attach import Attachments
from .host import Host
from .rows import NetworkRows


def reconcile_locked(rows: NetworkRows, host: Host, attachments: Attachments,
                     alive: Callable[[str], bool] | None) -> dict[str, list[str]]:
    """Under the network lock: what was removed, by kind."""
    from . import links

    report: dict[str, list[str]] = {"attachments": [], "leases": [], "links": [],
                                    "netns": [], "hosts": [], "staged": []}
    with host.netlink() as ipr:
        present = {li.name: li for li in links.links(ipr)}
    for rec in rows.attachments():
        a = rec.attachment
        stale = not rec.up
        stale = stale or (a.netns_path is not None and not netns.is_pinned(a.netns_path))
        stale = stale or (a.host_veth is not None and a.host_veth not in present)
        if not stale and alive is not None:
            stale = not alive(a.container_id)
        if stale:
            attachments.teardown_record(rec)
            report["attachments"].append(a.container_id)
    if alive is not None:
        attached = {r.attachment.container_id for r in rows.attachments()}
        dead = [c for c in sorted(rows.leaseholders() - attached) if not alive(c)]
        if dead:
            rows.release(dead)
            report["leases"] = dead
    for s in rows.all_staged():  # under the lock: a pending one was cut short
        if not s.up or not s.owner_alive() or (alive is not None and not alive(s.container_id)):
            attachments.unstage_record(s)
            report["staged"].append(s.container_id)
    staged = rows.all_staged()
    left = [r.attachment for r in rows.attachments()]
    veths = {a.host_veth for a in left if a.host_veth} | {s.host_veth for s in staged}
    bridges = {n.bridge for n in rows.networks()}
    with host.netlink() as ipr:
        for li in links.links(ipr):
            if not (li.alias or "").startswith(host.alias_prefix):
                continue
            if (li.kind == "veth" and li.name not in veths) or (
                li.kind == "bridge" and li.name not in bridges
            ):
                links.delete(ipr, li.name)
                report["links"].append(li.name)
    nspaths = {a.netns_path for a in left if a.netns_path} | {s.netns_path for s in staged}
    for entry in sorted(os.listdir(host.ns_dir)):
        p = str(host.ns_dir / entry)
        if p not in nspaths:
            netns.remove(p)
            report["netns"].append(entry)
    hpaths = {a.hosts_path for a in left}
    for entry in sorted(os.listdir(host.hosts_dir)):
        p = str(host.hosts_dir / entry)
        if p not in hpaths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
            report["hosts"].append(entry)
    for net in rows.networks():
        host.ensure_bridge(net)
        host.refresh_hosts(net.name)
    host.apply_nat()
    return report
