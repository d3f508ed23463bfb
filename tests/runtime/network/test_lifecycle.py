"""Teardown leaves nothing; crashes are reconciled; networks are created and
removed cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys
from volmerge.runtime.errors import BadInput, Conflict, NotFound
from volmerge.runtime.network import NetworkManager
from volmerge.runtime.store import Store

from .conftest import host_state, run_in


def _store_state(nm: NetworkManager) -> dict[str, object]:
    return {
        "host": host_state(),
        "leases": nm.leases(),
        "attachments": nm.store.db.execute("SELECT count(*) FROM network_attachments").fetchone()[0],
        "netns": sorted(os.listdir(nm.ns_dir)),
        "hosts": sorted(os.listdir(nm.hosts_dir)),
        "mounts": rsys.mounts_below(nm.store.root),
        "nat": nm.nat_rules(),
    }


def test_100_connect_disconnect_cycles_leave_nothing(nm) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    nm.connect("keeper", None, "keeper")  # a neighbour whose hosts file churns
    before = _store_state(nm)
    ips = set()
    for i in range(100):
        att = nm.connect(f"c{i}", None, f"h{i}", ports=[f"{10000 + i % 3}:80"] if i % 10 == 0 else [])
        ips.add(att.ip)
        nm.disconnect(f"c{i}", release=True)
    assert len(ips) == 1  # the released address is reused every time
    assert _store_state(nm) == before


def test_network_create_inspect_rm(nm) -> None:  # type: ignore[no-untyped-def]
    before = host_state()
    net = nm.create("lan", subnet="10.77.0.0/24", gateway="10.77.0.254")
    assert (net.subnet, net.gateway, net.default) == ("10.77.0.0/24", "10.77.0.254", False)
    assert net.bridge in host_state()["links"]
    auto = nm.create("auto")
    assert auto.subnet.startswith("10.89.") and auto.subnet.endswith("/24")
    nm.connect("c1", "lan", "one")
    info = nm.inspect("lan")
    assert [c["container_id"] for c in info.containers] == ["c1"]
    assert info.containers[0]["state"] == "connected"
    nm.disconnect("c1")
    assert nm.inspect("lan").containers[0]["state"] == "leased"
    with pytest.raises(Conflict) as exc:
        nm.remove("lan")  # a stopped container still holds its address
    assert exc.value.exit_code == 2
    nm.disconnect("c1", release=True)
    nm.remove("lan")
    nm.remove("auto")
    assert host_state() == before
    assert [n.name for n in nm.list()] == []


def test_network_bad_input(nm) -> None:  # type: ignore[no-untyped-def]
    nm.create("lan", subnet="10.77.0.0/24")
    before = (host_state(), nm.list())
    cases = [
        (Conflict, dict(name="lan2", subnet="10.77.0.128/25")),   # overlapping subnets
        (Conflict, dict(name="lan", subnet="10.78.0.0/24")),      # name taken
        (BadInput, dict(name="x", subnet="10.79.0.0/24", gateway="10.80.0.1")),
        (BadInput, dict(name="bad name", subnet=None)),
        (BadInput, dict(name="none", subnet=None)),
        (BadInput, dict(name="x", subnet="300.1.0.0/24")),
    ]
    for err, kw in cases:
        with pytest.raises(err) as exc:
            nm.create(**kw)
        assert exc.value.exit_code == 2, kw
    with pytest.raises(NotFound):
        nm.remove("nope")
    with pytest.raises(NotFound):
        nm.inspect("nope")
    assert (host_state(), nm.list()) == before


def test_default_network_created_on_first_use(nm) -> None:  # type: ignore[no-untyped-def]
    assert nm.list() == []
    att = nm.connect("c1", None, "one")
    (net,) = nm.list()
    assert net.name == "bridge" and net.default and net.subnet == "10.88.0.0/16"
    assert att.ip == "10.88.0.2" and nm.ensure_default() == net


CRASH = r"""
import os, sys
from volmerge.runtime.store import Store
from volmerge.runtime.network import NetworkManager, rows
rows.NetworkRows.mark_up = lambda self, cid: os._exit(9)   # die mid-connect
nm = NetworkManager(Store(sys.argv[1]))
nm.connect("crashy", None, "crashy", ports=["8080:80"])
"""


def test_crash_mid_connect_is_swept_on_next_open(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    before = _store_state(nm)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(root)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    # the crash left a pending row, a veth, a pinned netns, a hosts file, a DNAT rule
    assert _store_state(nm) != before
    assert nm.store.db.execute(
        "SELECT state FROM network_attachments WHERE container_id = 'crashy'").fetchone()[0] == "pending"
    Store(root).close()  # any next command opens the store: the sweeper reconciles
    after = _store_state(nm)
    # the lease stays: the container exists for the engine until it says otherwise
    assert [lease.container_id for lease in after.pop("leases")] == ["crashy"]
    assert after == {k: v for k, v in before.items() if k != "leases"}
    nm.reconcile(alive=lambda cid: False)
    assert _store_state(nm) == before


def test_reconcile_removes_dead_containers_and_strays(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    before = _store_state(nm)
    live = nm.connect("live", None, "live")
    nm.connect("dead", None, "dead", ports=["8080:80"])
    nm.disconnect("gone")  # unknown: no error
    nm.connect("gone", None, "gone")
    nm.disconnect("gone")  # stopped, lease kept
    # a stray namespace file and a stray link carrying our alias (a crashed older run)
    (nm.ns_dir / "stray").touch()
    from pyroute2 import IPRoute

    from volmerge.runtime.network import links

    with IPRoute(groups=0) as ipr:  # pyroute2's own client, not volmerge's
        ipr.link("add", ifname="vmh-stray", kind="bridge")
        idx = ipr.link_lookup(ifname="vmh-stray")[0]
        ipr.link("set", index=idx, ifalias=nm.host.alias("veth", "stray"))
        ipr.link("add", ifname="other0", kind="bridge")  # not ours: left alone
    report = nm.reconcile()  # without alive(): only strays go, leases stay
    assert report["netns"] == ["stray"] and report["attachments"] == []
    assert {lease.container_id for lease in nm.leases()} == {"live", "dead", "gone"}
    report = nm.reconcile(alive=lambda cid: cid == "live")
    assert sorted(report["attachments"]) == ["dead"]
    assert sorted(report["leases"]) == ["dead", "gone"]
    assert [lease.container_id for lease in nm.leases()] == ["live"]
    assert "8080" not in nm.nat_rules()
    assert nm.attachment("live") == live
    with links.open_host() as ipr:
        assert "vmh-stray" not in host_state()["links"]
        links.delete(ipr, "other0")
    nm.disconnect("live", release=True)
    assert _store_state(nm) == before


def test_reconcile_after_reboot_like_loss(nm) -> None:  # type: ignore[no-untyped-def]
    """The namespace pin and the links vanish (reboot); the rows remain."""
    att = nm.connect("c1", None, "one", ports=["8080:80"])
    from volmerge.runtime.network import links, netns

    netns.remove(att.netns_path)  # the kernel drops the veth with the namespace
    with links.open_host() as ipr:
        links.delete(ipr, nm.inspect("bridge").bridge)
    report = nm.reconcile()
    assert report["attachments"] == ["c1"]
    assert nm.inspect("bridge").bridge in host_state()["links"]  # bridge back
    assert nm.connect("c1", None, "one").ip == att.ip  # lease kept, comes back


def test_ip_forward_and_route_localnet(nm) -> None:  # type: ignore[no-untyped-def]
    net = nm.ensure_default()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    assert Path(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet").read_text().strip() == "1"


def test_reconnect_replaces_old_attachment(nm) -> None:  # type: ignore[no-untyped-def]
    a = nm.connect("c1", None, "one", ports=["8080:80"])
    b = nm.connect("c1", None, "one", ports=["8081:80"])
    assert a.ip == b.ip and b.ports[0].host_port == 8081
    rules = nm.nat_rules()
    assert "8081" in rules and "8080" not in rules
    assert run_in(b, ["ip", "-o", "link"]).stdout.count("eth0") == 1


OTHER_MNTNS = r"""
import sys
from volmerge.runtime import sys as rsys
from volmerge.runtime.store import Store
from volmerge.runtime.network import NetworkManager
rsys.unshare(rsys.CLONE_NEWNS)
rsys.make_private("/")
NetworkManager(Store(sys.argv[1])).disconnect("c1", release=True)
"""


def test_disconnect_from_another_mount_namespace_leaves_nothing(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    """unlink() of the pin file detaches its mounts in every mount namespace
    (Linux >= 3.18), so a supervisor with a private mount namespace can
    disconnect; the sweeper would catch a pin left anyway."""
    nm.ensure_default()
    before = _store_state(nm)
    att = nm.connect("c1", None, "one")
    proc = subprocess.run([sys.executable, "-c", OTHER_MNTNS, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not rsys.mounts_below(att.netns_path)
    assert _store_state(nm) == before


def test_sweeper_removes_unnamed_pins_and_hosts_files(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    from volmerge.runtime.network import netns

    nm.ensure_default()
    netns.create(nm.ns_dir / "orphan").close()  # a pinned namespace no row names
    (nm.hosts_dir / "orphan").write_text("x")
    Store(root).close()
    assert os.listdir(nm.ns_dir) == [] and os.listdir(nm.hosts_dir) == []
    assert not rsys.mounts_below(nm.ns_dir / "orphan")


PARALLEL = r"""
import sys
from volmerge.runtime.store import Store
from volmerge.runtime.network import NetworkManager
nm = NetworkManager(Store(sys.argv[1]))
for i in range(8):
    nm.connect(f"{sys.argv[2]}{i}", None, f"{sys.argv[2]}{i}")
"""


def test_parallel_connects_from_two_processes(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    procs = [subprocess.Popen([sys.executable, "-c", PARALLEL, str(root), tag],
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
        if p.stderr:
            p.stderr.close()
    leases = nm.leases()
    assert len(leases) == 16 and len({lease.ip for lease in leases}) == 16
    assert len([li for li in host_state()["links"] if li.startswith("vmh-")]) == 16
    text = Path(nm.attachment("a0").hosts_path).read_text()
    assert all(f"\t{t}{i}\n" in text for t in "ab" for i in range(8))


def test_connect_replaces_unnamed_leftovers_of_its_own(nm) -> None:  # type: ignore[no-untyped-def]
    from pyroute2 import IPRoute

    from volmerge.runtime.network import netns

    nm.ensure_default()
    netns.create(nm.ns_dir / "c1").close()  # a pin and a veth a crash left, no row
    with IPRoute(groups=0) as ipr:
        ipr.link("add", ifname=nm.host.veth_name("c1"), kind="veth", peer="vmh-peer")
    att = nm.connect("c1", None, "one")
    assert run_in(att, ["ip", "-o", "-4", "addr", "show", "eth0"]).stdout.count(att.ip) == 1
    assert "vmh-peer" not in host_state()["links"]
