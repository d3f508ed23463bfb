"""Every network test runs in a network namespace of its own.

The autouse fixture ``test_netns`` moves the test process's main thread (and
so every subprocess and CLI run it starts) into a fresh network namespace
that plays the host, and moves it back afterwards: the real host's network
is never touched, and all traffic stays inside namespaces the test made.  On
the way out it checks that the test left no link, address, route or nft
table in its "host" (the suite-wide leak guard checks the real host).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from volmerge.runtime import sys as rsys

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def host_state() -> dict[str, object]:
    """Links, addresses, routes and nft tables of the current namespace,
    once the kernel has taken the host ends of veths a teardown retired
    (``vmr-...``: they go with their container's namespace, in the kernel's
    own time, usually within milliseconds)."""
    from pyroute2 import IPRoute

    from volmerge.runtime.network.links import RETIRED_PREFIX

    with IPRoute(groups=0) as ipr:
        deadline = time.monotonic() + 10
        while (any(str(m.get("IFLA_IFNAME")).startswith(RETIRED_PREFIX) for m in ipr.get_links())
               and time.monotonic() < deadline):
            time.sleep(0.01)
        links = sorted(m.get("IFLA_IFNAME") for m in ipr.get_links())
        # IPv6 link-local addresses come and go by autoconfiguration, at
        # their own pace: not state that volmerge makes
        addrs = sorted(
            (m.get("IFA_LABEL") or str(m["index"]), m.get("IFA_ADDRESS"), m["prefixlen"])
            for m in ipr.get_addr() if not str(m.get("IFA_ADDRESS")).startswith("fe80:")
        )
        routes = sorted(
            (m.get("RTA_TABLE"), str(m.get("RTA_DST")), m["dst_len"], str(m.get("RTA_GATEWAY")))
            for m in ipr.get_routes(family=2)
        )
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {"links": links, "addresses": addrs, "routes": routes, "nft": tables.split("\n")}


@pytest.fixture(autouse=True)
def test_netns(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("unit"):  # pure: no network to isolate
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("network tests need root")
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        rsys.unshare(rsys.CLONE_NEWNET)
        from pyroute2 import IPRoute

        with IPRoute(groups=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        before = host_state()
        yield
        after = host_state()
        assert after == before, "the test left network state behind in its host namespace"
    finally:
        rsys.setns(saved, rsys.CLONE_NEWNET)
        os.close(saved)


@dataclass
class Ctr:
    """A process standing in for a container: joins the attachment's netns,
    gets a private mount namespace with hosts_path bind-mounted at /etc/hosts."""

    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _enter(netns_path: str | None, hosts_path: str | None):  # type: ignore[no-untyped-def]
    def pre() -> None:
        if netns_path:
            fd = os.open(netns_path, os.O_RDONLY)
            rsys.setns(fd, rsys.CLONE_NEWNET)
            os.close(fd)
        if hosts_path:
            rsys.unshare(rsys.CLONE_NEWNS)
            rsys.make_private("/")
            rsys.mount(hosts_path, "/etc/hosts", None, rsys.MS_BIND)
    return pre


@pytest.fixture
def container() -> Iterator:
    """``container(att, argv)`` starts a long-running process in the attachment."""
    started: list[Ctr] = []

    def start(att, argv: list[str]) -> Ctr:  # type: ignore[no-untyped-def]
        proc = subprocess.Popen(argv, preexec_fn=_enter(att.netns_path, att.hosts_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = Ctr(proc)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def run_in(att, argv: list[str], timeout: float = 5) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Run a command to completion inside the attachment (``att=None``: the test's host)."""
    pre = _enter(att.netns_path, att.hosts_path) if att is not None else None
    return subprocess.run(argv, preexec_fn=pre, capture_output=True, text=True, timeout=timeout)


def wget(att, url: str, tries: int = 20) -> str:  # type: ignore[no-untyped-def]
    """GET with retries while the server starts (busybox wget -T crashes here,
    so the timeout is the subprocess's)."""
    last = None
    for _ in range(tries):
        try:
            last = run_in(att, ["busybox", "wget", "-qO-", url], timeout=3)
        except subprocess.TimeoutExpired:
            last = None
            continue
        if last.returncode == 0:
            return last.stdout
        time.sleep(0.05)
    raise AssertionError(f"GET {url} failed: {last.stderr if last else 'timeout'}")


@pytest.fixture
def www(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello from web\n")
    return d


@pytest.fixture
def nm(root: Path):  # type: ignore[no-untyped-def]
    """A NetworkManager on a fresh store; every container is released and
    every network removed at the end, so the host check above sees a clean slate."""
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store

    store = Store(root)
    mgr = NetworkManager(store)
    yield mgr
    for att in store.db.execute("SELECT container_id FROM network_attachments").fetchall():
        mgr.disconnect(att[0], release=True)
    for lease in mgr.leases():
        mgr.disconnect(lease.container_id, release=True)
    for net in mgr.list():
        mgr.remove(net.name)
    store.close()
