"""runtime/network/links.py: volmerge's netlink requests (pyroute2's message
classes on a plain socket), checked against what the kernel then reports
through pyroute2's own IPRoute and iproute2.  Each test runs in a network
namespace of its own (conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from volmerge.runtime.network import links, netns


def _link(name: str) -> dict[str, object]:
    with IPRoute(groups=0) as ipr:
        (msg,) = ipr.get_links(ipr.link_lookup(ifname=name)[0])
        info = msg.get("IFLA_LINKINFO")
        return {"up": bool(msg["flags"] & 1), "alias": msg.get("IFLA_IFALIAS"),
                "master": msg.get("IFLA_MASTER"), "index": msg["index"],
                "kind": info.get("IFLA_INFO_KIND") if info else None}


def test_a_bridge_is_made_once_with_its_gateway_and_alias() -> None:
    with links.open_host() as nl:
        assert links.ensure_bridge(nl, "vmtest0", "10.77.0.1", 24, "volmerge:t:bridge:n")
        assert not links.ensure_bridge(nl, "vmtest0", "10.77.0.1", 24, "volmerge:t:bridge:n")
        assert _link("vmtest0") | {"index": 0} == {
            "up": True, "alias": "volmerge:t:bridge:n", "master": None, "index": 0,
            "kind": "bridge"}
        out = subprocess.run(["ip", "-4", "addr", "show", "vmtest0"], capture_output=True,
                             text=True, check=True).stdout
        assert "inet 10.77.0.1/24" in out
        # down again (as after `ip link set down`): brought up, the address not doubled
        subprocess.run(["ip", "link", "set", "vmtest0", "down"], check=True)
        assert not links.ensure_bridge(nl, "vmtest0", "10.77.0.1", 24, "volmerge:t:bridge:n")
        assert _link("vmtest0")["up"]
        assert links.delete(nl, "vmtest0") and not links.delete(nl, "vmtest0")


def test_a_veth_pair_joins_the_bridge_with_hairpin_and_its_peer_is_configured(
        tmp_path: Path) -> None:
    pin = tmp_path / "ns"
    with links.open_host() as nl:
        links.ensure_bridge(nl, "vmtest1", "10.78.0.1", 24, "volmerge:t:bridge:m")
        sock = netns.create(pin)
        try:
            fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
            try:
                links.add_veth(nl, "vmh-t1", "vmtest1", fd, "02:42:0a:4e:00:02", "volmerge:t:veth:c")
                # a leftover of a crash under the same name is replaced
                links.delete(nl, "vmh-t1")
                links.add_veth(nl, "vmh-t1", "vmtest1", fd, "02:42:0a:4e:00:02", "volmerge:t:veth:c")
            finally:
                os.close(fd)
            with links.open_in(sock) as inside:
                sock = None
                links.configure_inside(inside, "10.78.0.2", 24, "10.78.0.1")
            port = _link("vmh-t1")
            assert port["up"] and port["alias"] == "volmerge:t:veth:c"
            assert port["master"] == _link("vmtest1")["index"]
            detail = subprocess.run(["ip", "-d", "link", "show", "vmh-t1"], capture_output=True,
                                    text=True, check=True).stdout
            assert "hairpin on" in detail
            inside_ip = subprocess.run(
                ["nsenter", f"--net={pin}", "sh", "-c", "ip -4 addr; ip link; ip route"],
                capture_output=True, text=True, check=True).stdout
            assert "inet 10.78.0.2/24" in inside_ip and "02:42:0a:4e:00:02" in inside_ip
            assert "lo: <LOOPBACK,UP" in inside_ip and "default via 10.78.0.1 dev eth0" in inside_ip
        finally:
            if sock is not None:
                sock.close()
            links.delete(nl, "vmh-t1")
            links.delete(nl, "vmtest1")
            netns.remove(pin)


def test_errors_carry_the_kernels_errno() -> None:
    with links.open_host() as nl:
        assert links.lookup(nl, "no-such-link") is None
        assert links.lookup(nl, "lo") == 1
        with pytest.raises(links.NetlinkError) as err:
            links._add_address(nl, 1, "127.0.0.1", 8)  # lo has it already
        assert err.value.code == 17  # EEXIST
        with pytest.raises(OSError, match="eth0 is missing"):
            links.configure_inside(nl, "10.9.9.9", 24, None)  # no eth0 here
        with pytest.raises(links.NetlinkError) as err:
            links.add_veth(nl, "vmh-x", "no-such-bridge", 10**6, None, "a")  # no such fd
        assert err.value.code in (9, 22)  # EBADF / EINVAL
        assert links.lookup(nl, "vmh-x") is None


def test_a_dump_longer_than_one_reply_is_read_to_its_end() -> None:
    names = [f"vmd{i}" for i in range(60)]
    batch = "".join(f"link add {n} type bridge\n" for n in names)
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    try:
        with links.open_host() as nl:
            seen = [li.name for li in links.links(nl)]
            assert set(names) <= set(seen) and len(seen) == len(set(seen))
            kinds = {li.name: li.kind for li in links.links(nl)}
            assert kinds["vmd0"] == "bridge" and kinds["lo"] is None
            # the same socket serves the next request after a long dump
            assert links.lookup(nl, "vmd59") is not None
    finally:
        subprocess.run(["ip", "-batch", "-"], text=True, check=True,
                       input="".join(f"link del {n}\n" for n in names))


def test_the_module_does_not_load_pyroute2s_asyncio_client() -> None:
    code = ("import sys\n"
            "from volmerge.runtime.network import links\n"
            "heavy = sorted(m for m in ('asyncio', 'ssl', 'unittest', 'pyroute2.iproute',"
            " 'pyroute2.ndb') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
