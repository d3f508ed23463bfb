"""Containers on bridge networks: traffic by name, published ports, leases,
takeover, hosts files.  Everything inside namespaces the test made."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.runtime.errors import BadInput, Conflict, NotFound
from volmerge.runtime.network import Attachment, PortSpec

from .conftest import host_state, run_in, wget


def httpd(container, att: Attachment, www: Path, port: int = 80):  # type: ignore[no-untyped-def]
    return container(att, ["busybox", "httpd", "-f", "-p", str(port), "-h", str(www)])


def test_two_containers_talk_by_name(nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    web = nm.connect("web1", None, "web", aliases=["www"])
    client = nm.connect("client1", None, "client")
    assert web.network == "bridge" and web.ip != client.ip
    assert web.gateway == client.gateway and web.prefixlen == 16
    httpd(container, web, www)
    assert wget(client, "http://web/") == "hello from web\n"
    assert wget(client, "http://www/") == "hello from web\n"
    ping = run_in(client, ["busybox", "ping", "-c", "1", "-W", "2", "web"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # inside: lo up, eth0 with the address, default route via the gateway
    ip = run_in(client, ["ip", "-o", "-4", "addr"]).stdout
    assert f"eth0    inet {client.ip}/16" in ip.replace("\\", "") or client.ip in ip
    route = run_in(client, ["ip", "route"]).stdout
    assert f"default via {client.gateway} dev eth0" in route
    assert "127.0.0.1" in run_in(client, ["ip", "-o", "addr", "show", "lo"]).stdout


def test_published_port_from_host(nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    att = nm.connect("web1", None, "web", ports=["8080:80", "127.0.0.1:8081:80"])
    assert att.ports == (PortSpec("0.0.0.0", 8080, 80), PortSpec("127.0.0.1", 8081, 80))
    httpd(container, att, www)
    # the test's host namespace: loopback and one of the host's own addresses
    assert wget(None, "http://127.0.0.1:8080/") == "hello from web\n"
    assert wget(None, "http://127.0.0.1:8081/") == "hello from web\n"
    gw = att.gateway
    assert wget(None, f"http://{gw}:8080/") == "hello from web\n"
    # another container through the host address, and the container itself (hairpin)
    other = nm.connect("client1", None, "client")
    assert wget(other, f"http://{gw}:8080/") == "hello from web\n"
    assert wget(att, f"http://{gw}:8080/") == "hello from web\n"
    assert "tcp . 8080 : " in nm.nat_rules()
    assert f"127.0.0.1 . tcp . 8081 : {att.ip} . 80" in nm.nat_rules()
    nm.disconnect("web1")
    assert "8080" not in nm.nat_rules() and "8081" not in nm.nat_rules()


def test_published_udp_port(nm, container) -> None:  # type: ignore[no-untyped-def]
    att = nm.connect("dns1", None, "dns", ports=["5353:53/udp"])
    echo = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 53))\nwhile True:\n"
            "    d, a = s.recvfrom(100)\n    s.sendto(b'pong:' + d, a)\n")
    container(att, [sys.executable, "-c", echo])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    try:
        for _ in range(30):
            s.sendto(b"ping\n", ("127.0.0.1", 5353))
            try:
                data, _ = s.recvfrom(100)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no UDP answer through the published port")
    finally:
        s.close()
    assert data == b"pong:ping\n"


def test_address_stable_across_stop_start(nm) -> None:  # type: ignore[no-untyped-def]
    a = nm.connect("c1", None, "one")
    b = nm.connect("c2", None, "two")
    nm.disconnect("c1")  # stop: the lease stays
    c = nm.connect("c3", None, "three")
    assert c.ip not in (a.ip, b.ip)
    again = nm.connect("c1", None, "one")
    assert (again.ip, again.mac) == (a.ip, a.mac)
    assert not Path(a.hosts_path).exists() or again.hosts_path == a.hosts_path


def test_address_reuse_after_release(nm) -> None:  # type: ignore[no-untyped-def]
    a = nm.connect("c1", None, "one")
    nm.connect("c2", None, "two")
    nm.disconnect("c1", release=True)  # rm
    assert [lease.container_id for lease in nm.leases()] == ["c2"]
    c = nm.connect("c3", None, "three")
    assert c.ip == a.ip


def test_requested_address_and_taken_address(nm) -> None:  # type: ignore[no-untyped-def]
    net = nm.create("lan", subnet="10.123.0.0/24")
    a = nm.connect("c1", "lan", "one", ip="10.123.0.50")
    assert a.ip == "10.123.0.50" and a.gateway == net.gateway == "10.123.0.1"
    before = host_state()
    with pytest.raises(Conflict) as exc:
        nm.connect("c2", "lan", "two", ip="10.123.0.50")
    assert exc.value.exit_code == 2 and "taken" in str(exc.value)
    with pytest.raises(Conflict):
        nm.connect("c2", "lan", "two", ip="10.123.0.1")  # the gateway
    with pytest.raises(BadInput):
        nm.connect("c2", "lan", "two", ip="10.124.0.5")
    assert host_state() == before and nm.attachment("c2") is None
    assert nm.leases(container_id="c2") == []


def test_port_already_published(nm) -> None:  # type: ignore[no-untyped-def]
    nm.connect("c1", None, "one", ports=["8080:80"])
    before = host_state()
    for spec in ("8080:81", "127.0.0.1:8080:80"):
        with pytest.raises(Conflict) as exc:
            nm.connect("c2", None, "two", ports=[spec])
        assert exc.value.exit_code == 2 and "already published" in str(exc.value)
    with pytest.raises(Conflict):
        nm.connect("c2", None, "two", ports=["9090:80", "9090:81"])
    assert host_state() == before
    nm.connect("c2", None, "two", ports=["8080:80/udp"])  # another protocol is fine


def test_port_used_by_a_host_process(nm) -> None:  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.bind(("127.0.0.1", 9999))
    s.listen()
    try:
        with pytest.raises(Conflict, match="host process"):
            nm.connect("c1", None, "one", ports=["9999:80"])
    finally:
        s.close()


def test_unknown_network(nm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFound) as exc:
        nm.connect("c1", "nope", "one")
    assert exc.value.exit_code == 2
    with pytest.raises(BadInput):
        nm.connect("c1", "none", "one", ports=["80:80"])
    with pytest.raises(BadInput):
        nm.connect("bad id!", None, "one")


def test_hosts_files_kept_current_in_place(nm) -> None:  # type: ignore[no-untyped-def]
    a = nm.connect("c1", None, "alpha")
    ino = os.stat(a.hosts_path).st_ino
    assert "alpha" in Path(a.hosts_path).read_text()
    b = nm.connect("c2", None, "beta")
    text = Path(a.hosts_path).read_text()
    assert f"{b.ip}\tbeta" in text and os.stat(a.hosts_path).st_ino == ino
    assert f"{a.ip}\talpha" in Path(b.hosts_path).read_text()
    nm.disconnect("c2")
    assert "beta" not in Path(a.hosts_path).read_text()
    assert os.stat(a.hosts_path).st_ino == ino
    assert not Path(b.hosts_path).exists()


def test_none_and_host_networks(nm) -> None:  # type: ignore[no-untyped-def]
    before = host_state()
    iso = nm.connect("c1", "none", "lonely")
    assert iso.ip is None and iso.netns_path
    links = run_in(iso, ["ip", "-o", "link"]).stdout
    assert "lo:" in links and "eth0" not in links and "UP" in links
    assert "lonely" in Path(iso.hosts_path).read_text()
    host = nm.connect("c2", "host", "hosty")
    assert host.netns_path is None and "hosty" in Path(host.hosts_path).read_text()
    assert host_state() == before
    nm.disconnect("c1", release=True)
    nm.disconnect("c2", release=True)
    assert not Path(iso.netns_path).exists()


def test_takeover_keeps_address_and_ports(nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    old = nm.connect("old1", None, "app", ports=["8080:80"])
    httpd(container, old, www).stop()
    nm.disconnect("old1")                      # the upgrade stopped the old container
    leases = nm.takeover("old1", "new1")
    assert [(lease.ip, lease.ports) for lease in leases] == [(old.ip, old.ports)]
    assert nm.leases(container_id="old1") == []
    (www / "index.html").write_text("hello from v2\n")
    new = nm.connect("new1", None, "app")      # ip and ports from the lease
    assert (new.ip, new.mac, new.ports) == (old.ip, old.mac, old.ports)
    httpd(container, new, www)
    assert wget(None, "http://127.0.0.1:8080/") == "hello from v2\n"
    # rollback goes the same way back
    nm.disconnect("new1")
    nm.takeover("new1", "old1")
    back = nm.connect("old1", None, "app")
    assert back.ip == old.ip and back.ports == old.ports


def test_takeover_disconnects_a_running_old_and_refuses_a_connected_new(nm) -> None:  # type: ignore[no-untyped-def]
    old = nm.connect("old1", None, "app")
    nm.connect("new1", None, "app2")
    with pytest.raises(Conflict):
        nm.takeover("old1", "new1")
    nm.disconnect("new1", release=True)
    nm.takeover("old1", "new1")
    assert nm.attachment("old1") is None
    assert nm.connect("new1", None, "app").ip == old.ip


def test_networks_are_isolated(nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    nm.create("a", subnet="10.201.0.0/24")
    nm.create("b", subnet="10.202.0.0/24")
    x = nm.connect("x", "a", "x")
    y = nm.connect("y", "b", "y")
    httpd(container, x, www)
    assert wget(None, f"http://{x.ip}/") == "hello from web\n"
    with pytest.raises((subprocess.CalledProcessError, subprocess.TimeoutExpired)):
        run_in(y, ["busybox", "wget", "-qO-", f"http://{x.ip}/"], timeout=1).check_returncode()


def test_incremental_port_publication_matches_full_rebuild(nm) -> None:  # type: ignore[no-untyped-def]
    import re

    def elements() -> set[str]:
        return set(re.findall(r"[\w.]+ \. [\w.]+(?: \. \d+)? : [\d.]+ \. \d+", nm.nat_rules()))

    nm.connect("a", None, "a", ports=["8080:80", "127.0.0.1:8081:81"])
    nm.connect("b", None, "b", ports=["5353:53/udp"])
    incremental = elements()
    assert len(incremental) == 3
    nm.reconcile()  # rebuilds the table from the database
    assert elements() == incremental


def _link(name: str) -> dict[str, object] | None:
    from pyroute2 import IPRoute

    with IPRoute(groups=0) as ipr:
        for m in ipr.get_links():
            if m.get("IFLA_IFNAME") == name:
                return {"up": bool(m["flags"] & 1), "master": m.get("IFLA_MASTER")}
    return None


def _retired() -> list[dict[str, object]]:
    from pyroute2 import IPRoute

    from volmerge.runtime.network.links import RETIRED_PREFIX

    with IPRoute(groups=0) as ipr:
        return [{"up": bool(m["flags"] & 1), "master": m.get("IFLA_MASTER")}
                for m in ipr.get_links() if m.get("IFLA_IFNAME", "").startswith(RETIRED_PREFIX)]


def test_disconnect_retires_the_veth_off_the_bridge_and_the_kernel_removes_it(
        nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    """A stop does not wait for the veth's deletion (RCU grace periods): its
    host end leaves the bridge, goes down and is renamed at once, and goes
    with the container's namespace; its name is free for the next start."""
    att = nm.connect("web1", None, "web", ports=["8080:80"])
    veth = att.host_veth
    assert _link(veth) == {"up": True, "master": _bridge_index(nm)}
    nm.disconnect("web1")
    assert _link(veth) is None  # the name is free at once
    assert all(r == {"up": False, "master": None} for r in _retired())  # forwards nothing
    assert "8080" not in nm.nat_rules()
    host_state()  # waits for the kernel to take the retired end
    assert _retired() == []
    again = nm.connect("web1", None, "web", ports=["8080:80"])  # a start right after the stop
    assert (again.host_veth, again.ip) == (veth, att.ip)
    server = httpd(container, again, www)
    assert wget(None, "http://127.0.0.1:8080/") == "hello from web\n"
    nm.disconnect("web1")
    # a process left inside keeps the namespace, and so the retired end, until it exits
    assert _retired() == [{"up": False, "master": None}]
    with pytest.raises(OSError):  # refused: nothing forwards to it any more
        socket.create_connection(("127.0.0.1", 8080), timeout=2)
    server.stop()
    host_state()
    assert _retired() == []


def _bridge_index(nm) -> int:  # type: ignore[no-untyped-def]
    from pyroute2 import IPRoute

    (net,) = [n for n in nm.list() if n.default]
    with IPRoute(groups=0) as ipr:
        return int(ipr.link_lookup(ifname=net.bridge)[0])


def test_disconnect_rewrites_the_table_when_its_ports_are_gone_already(nm) -> None:  # type: ignore[no-untyped-def]
    """The ports' elements are removed by key; when nft refuses (the table was
    rewritten or flushed by hand meanwhile), the table is rebuilt from the rows."""
    nm.connect("a", None, "a", ports=["8080:80"])
    nm.connect("b", None, "b", ports=["8081:80"])
    subprocess.run(["nft", "flush", "map", "ip", nm.table, "published_any"], check=True)
    nm.disconnect("a")
    rules = nm.nat_rules()
    assert "8080" not in rules and "tcp . 8081 : " in rules
