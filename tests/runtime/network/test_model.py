"""Pure parts: port syntax, IPAM arithmetic, hosts rendering, nft rendering."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.runtime.errors import BadInput, Conflict
from volmerge.runtime.network import PortSpec, hosts, ipam, ports

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.mark.parametrize("text, want", [
    ("8080:80", PortSpec("0.0.0.0", 8080, 80, "tcp")),
    ("127.0.0.1:8080:80", PortSpec("127.0.0.1", 8080, 80, "tcp")),
    ("5353:53/udp", PortSpec("0.0.0.0", 5353, 53, "udp")),
    (":8080:80/TCP", PortSpec("0.0.0.0", 8080, 80, "tcp")),
])
def test_port_parse(text: str, want: PortSpec) -> None:
    assert PortSpec.parse(text) == want


@pytest.mark.parametrize("text", [
    "80", "a:80", "8080:0", "70000:80", "8080:80/sctp", "1.2.3:8080:80", "::1:8080:80", "",
])
def test_port_parse_rejects(text: str) -> None:
    with pytest.raises(BadInput) as exc:
        PortSpec.parse(text)
    assert exc.value.exit_code == 2


@given(st.ip_addresses(v=4), st.integers(1, 65535), st.integers(1, 65535),
       st.sampled_from(["tcp", "udp"]))
def test_port_roundtrip(ip: ipaddress.IPv4Address, hp: int, cp: int, proto: str) -> None:
    spec = PortSpec(str(ip), hp, cp, proto)
    assert PortSpec.parse(str(spec)) == spec
    assert PortSpec.from_dict(spec.to_dict()) == spec


def test_port_clashes() -> None:
    a = PortSpec.parse("8080:80")
    assert a.clashes(PortSpec.parse("127.0.0.1:8080:81"))
    assert not a.clashes(PortSpec.parse("8080:80/udp"))
    assert not PortSpec.parse("127.0.0.1:8080:80").clashes(PortSpec.parse("127.0.0.2:8080:80"))


def test_allocate_lowest_free_and_reuse() -> None:
    net = ipaddress.IPv4Network("10.9.0.0/29")
    gw = ipam.parse_gateway(net, None)
    assert str(gw) == "10.9.0.1"
    taken: list[str] = []
    for _ in range(5):
        taken.append(str(ipam.allocate(net, gw, taken)))
    assert taken == [f"10.9.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict):
        ipam.allocate(net, gw, taken)
    taken.remove("10.9.0.4")
    assert str(ipam.allocate(net, gw, taken)) == "10.9.0.4"


@pytest.mark.parametrize("text", [
    "10.0.0.1/24", "10.0.0.0/31", "fd00::/64", "nonsense", "127.0.0.0/8", "10.0.0.0/33",
])
def test_subnet_rejects(text: str) -> None:
    with pytest.raises(BadInput):
        ipam.parse_subnet(text)


def test_gateway_and_address_checks() -> None:
    net = ipam.parse_subnet("10.7.0.0/24")
    for bad in ("10.7.1.1", "10.7.0.0", "10.7.0.255", "x"):
        with pytest.raises(BadInput):
            ipam.parse_gateway(net, bad)
    gw = ipam.parse_gateway(net, "10.7.0.254")
    with pytest.raises(Conflict):
        ipam.check_address(net, gw, "10.7.0.254")
    with pytest.raises(BadInput):
        ipam.check_address(net, gw, "10.8.0.5")
    assert str(ipam.check_address(net, gw, "10.7.0.9")) == "10.7.0.9"


def test_choose_subnet_skips_used() -> None:
    first = ipam.choose_subnet(True, [])
    assert str(first) == ipam.DEFAULT_SUBNET or not any(
        first.overlaps(r) for r in ipam.host_routes())
    nxt = ipam.choose_subnet(False, [ipaddress.IPv4Network("10.89.0.0/24")])
    assert not nxt.overlaps(ipaddress.IPv4Network("10.89.0.0/24"))


def test_hosts_render() -> None:
    text = hosts.render(("10.0.0.3", "b", ["b-alias"]),
                        [("10.0.0.10", "c", []), ("10.0.0.2", "a", []), ("10.0.0.3", "b", [])])
    lines = text.splitlines()
    assert lines[0].startswith("127.0.0.1")
    assert lines[2] == "10.0.0.3\tb b-alias"
    assert lines[3:] == ["10.0.0.2\ta", "10.0.0.10\tc"]
    assert "127.0.1.1\tlonely" in hosts.render((None, "lonely", []), [])


def test_hosts_render_extra_hosts_before_own_and_peers() -> None:
    text = hosts.render(("10.0.0.3", "b", []), [("10.0.0.2", "a", [])],
                        [("db.example", "192.0.2.7"), ("v6", "2001:db8::7")])
    assert text.splitlines()[2:] == ["192.0.2.7\tdb.example", "2001:db8::7\tv6", "10.0.0.3\tb",
                                     "10.0.0.2\ta"]
    assert hosts.render_host("me", [("x", "192.0.2.1")]).endswith("192.0.2.1\tx\n127.0.1.1\tme\n")


def test_hosts_write_in_place_keeps_inode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "hosts"
    assert hosts.write_in_place(p, "a much longer first content\n")
    ino = p.stat().st_ino
    assert hosts.write_in_place(p, "short\n")
    assert not hosts.write_in_place(p, "short\n")
    assert p.stat().st_ino == ino and p.read_text() == "short\n"


def test_nft_render_is_empty_without_networks() -> None:
    text = ports.render("t", [], [])
    assert text == "table ip t\ndelete table ip t\n"
    full = ports.render("t", [ports.NatNetwork("vmb-a", "10.1.0.0/24"),
                              ports.NatNetwork("vmb-b", "10.2.0.0/24")],
                        [ports.NatPort(PortSpec.parse("127.0.0.1:80:8080"), "10.1.0.2", "vmb-a")])
    assert "elements = { 127.0.0.1 . tcp . 80 : 10.1.0.2 . 8080 }" in full
    assert 'iifname "vmb-a" oifname { "vmb-b" } drop' in full


@pytest.mark.parametrize("text, key", [
    ("8080:80", "tcp . 8080"),
    ("127.0.0.1:8081:80", "127.0.0.1 . tcp . 8081"),
    ("5353:53/udp", "udp . 5353"),
])
def test_nft_element_key_is_the_element_without_its_value(text: str, key: str) -> None:
    """A disconnect deletes its ports' elements by this key: it must be the
    part of the rendered element before its value."""
    spec = PortSpec.parse(text)
    assert ports.element_key(spec) == key
    assert ports.element(ports.NatPort(spec, "10.1.0.2", "vmb-a")).startswith(key + " : ")
