"""The network tables as typed values (runtime/network/rows.py): rows in and
out, and the sweeper's cheap check.  No root, no netlink: a store in a
temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.runtime.network.model import Attachment, Lease, Network, PortSpec
from volmerge.runtime.network.rows import (
    AttachmentRecord,
    NetworkRows,
    attachment_from_row,
    ports_from_json,
    ports_to_json,
    sweep_needed,
)
from volmerge.runtime.network.schema import COMPONENT, MIGRATIONS
from volmerge.runtime.store import Store

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

NET = Network(name="n1", id="ab" * 16, bridge="vmb-abababab", subnet="10.7.0.0/24",
              gateway="10.7.0.1", default=False, created=5.0)
P80 = PortSpec("0.0.0.0", 8080, 80)


@pytest.fixture
def rows(tmp_path: Path):
    st = Store(tmp_path / "root", sweep=False)
    st.ensure_schema(COMPONENT, MIGRATIONS)
    try:
        yield NetworkRows(st)
    finally:
        st.close()


def _attach(rows: NetworkRows, cid: str, ip: str, ports=()) -> Attachment:
    att = Attachment(netns_path=f"/ns/{cid}", ip=ip, gateway="10.7.0.1", prefixlen=24,
                     hosts_path=f"/hosts/{cid}", ports=tuple(ports), network="n1",
                     container_id=cid, hostname=cid, mac="02:42:0a:07:00:02",
                     host_veth="vmh-" + cid, aliases=("a", "b"))
    with rows.store.transaction() as conn:
        rows.put_lease(conn, Lease("n1", ip, cid, cid, ("a", "b"), tuple(ports)), new=True)
        rows.insert_attachment(conn, att)
    return att


def test_network_lease_and_attachment_round_trip(rows):
    rows.insert_network(NET)
    assert rows.network("n1") == NET and rows.networks() == [NET]
    att = _attach(rows, "c1", "10.7.0.2", [P80])
    rec = rows.attachment("c1")
    assert rec == AttachmentRecord(att, "pending") and not rec.up
    rows.mark_up("c1")
    assert rows.attachment("c1").up
    assert rows.lease("n1", "c1") == Lease("n1", "10.7.0.2", "c1", "c1", ("a", "b"), (P80,))
    assert rows.lease_holder("n1", "10.7.0.2") == "c1" and rows.users("n1") == ["c1"]
    (shown,) = rows.network("n1", with_containers=True).containers
    assert shown == {"container_id": "c1", "hostname": "c1", "ip": "10.7.0.2",
                     "state": "connected", "ports": ["8080:80/tcp"]}
    rows.delete_attachment("c1")
    (shown,) = rows.network("n1", with_containers=True).containers
    assert shown["state"] == "leased" and shown["ports"] == ["8080:80/tcp"]


def test_move_leases_replaces_the_successors_own(rows):
    rows.insert_network(NET)
    _attach(rows, "old", "10.7.0.2")
    _attach(rows, "new", "10.7.0.3")
    rows.move_leases("old", "new")
    assert [(x.container_id, x.ip) for x in rows.leases()] == [("new", "10.7.0.2")]
    rows.release(["new"])
    assert rows.leases() == [] and rows.leaseholders() == set()


def test_row_mapping_and_ports_json():
    assert ports_from_json(ports_to_json([P80])) == (P80,) and ports_from_json(None) == ()
    r = {"netns_path": None, "ip": None, "gateway": None, "prefixlen": None,
         "hosts_path": "/h", "ports": "[]", "network": "host", "container_id": "c",
         "hostname": "h", "mac": None, "host_veth": None, "aliases": "[]", "state": "up"}
    rec = attachment_from_row(r)
    assert rec.up and rec.attachment.network == "host" and rec.attachment.aliases == ()


def test_sweep_needed_only_for_pending_rows_or_unnamed_files(rows):
    st = rows.store
    assert not sweep_needed(st)
    rows.insert_network(NET)
    att = _attach(rows, "c1", "10.7.0.2")
    assert sweep_needed(st)  # pending: a crash mid-connect
    rows.mark_up("c1")
    assert not sweep_needed(st)
    stray = st.path("network", "hosts")
    stray.mkdir(parents=True, exist_ok=True)
    (stray / "x").touch()
    assert sweep_needed(st)  # a hosts file no row names
    (stray / "x").unlink()
    assert att.hosts_path and not sweep_needed(st)
