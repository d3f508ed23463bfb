"""A container's namespace staged ahead of its start (NetworkManager.stage):
made while another container still holds the address, adopted by the
connect that follows the takeover, and removed by unstage, disconnect and
the reconciliation of a stager that died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from volmerge.runtime.network import NetworkManager
from volmerge.runtime.store import Store

from .conftest import host_state, run_in, wget
from .test_connect import httpd
from .test_lifecycle import _store_state


def _ip(nm: NetworkManager, n: int) -> str:
    import ipaddress

    return str(ipaddress.IPv4Network(nm.ensure_default().subnet)[n])


def _links() -> list[str]:
    return host_state()["links"]  # type: ignore[return-value]


def test_staged_then_taken_over_serves_on_the_old_address(nm, container, www: Path) -> None:  # type: ignore[no-untyped-def]
    old = nm.connect("old1", None, "app", ports=["8080:80"])
    serving = httpd(container, old, www)
    assert wget(None, "http://127.0.0.1:8080/") == "hello from web\n"
    assert nm.stage("new1", None, old.ip)  # while the old one serves on that address
    veth = nm.host.veth_name("new1")
    assert veth in _links() and Path(nm.ns_dir / "new1").exists()
    inside = run_in(type("A", (), {"netns_path": str(nm.ns_dir / "new1"),
                                   "hosts_path": None})(), ["ip", "-o", "addr", "show", "eth0"])
    assert f"{old.ip}/" in inside.stdout
    assert wget(None, "http://127.0.0.1:8080/") == "hello from web\n"  # untouched
    # the switch: the old one stops, its lease moves, the successor connects
    serving.stop()
    nm.takeover("old1", "new1")
    (www / "index.html").write_text("hello from v2\n")
    new = nm.connect("new1", None, "app")
    assert (new.ip, new.mac, new.ports) == (old.ip, old.mac, old.ports)
    assert new.host_veth == veth
    assert nm.rows.staged("new1") is None
    httpd(container, new, www)
    assert wget(None, "http://127.0.0.1:8080/") == "hello from v2\n"
    nm.disconnect("new1", release=True)
    assert veth not in _links() and not Path(nm.ns_dir / "new1").exists()


def test_unstage_and_disconnect_leave_nothing(nm) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    before = _store_state(nm)
    assert nm.stage("s1", None, _ip(nm, 77))
    assert _store_state(nm) != before
    nm.unstage("s1")
    nm.unstage("s1")  # idempotent
    assert _store_state(nm) == before
    assert nm.stage("s1", None, _ip(nm, 77))
    nm.disconnect("s1", release=True)
    assert _store_state(nm) == before


def test_a_staged_address_that_does_not_fit_is_replaced_at_connect(nm) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    assert nm.stage("s1", None, _ip(nm, 77))
    att = nm.connect("s1", None, "s1")  # leased another address
    assert att.ip != _ip(nm, 77) and nm.rows.staged("s1") is None
    out = run_in(att, ["ip", "-o", "addr", "show", "eth0"]).stdout
    assert f"{att.ip}/" in out and f"{_ip(nm, 77)}/" not in out
    nm.disconnect("s1", release=True)


def test_nothing_is_staged_where_it_does_not_apply(nm) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    before = _store_state(nm)
    assert not nm.stage("s1", "none", _ip(nm, 77))
    assert not nm.stage("s1", "nosuchnet", _ip(nm, 77))
    assert not nm.stage("s1", None, "192.0.2.1")  # outside the subnet
    assert not nm.stage("s1", None, "not-an-address")
    nm.connect("c1", None, "c1")
    assert not nm.stage("c1", None, _ip(nm, 77))  # connected already
    nm.disconnect("c1", release=True)
    assert _store_state(nm) == before


STAGE_AND_DIE = r"""
import os, signal, sys
from volmerge.runtime.store import Store
from volmerge.runtime.network import NetworkManager
NetworkManager(Store(sys.argv[1])).stage("dead1", None, sys.argv[2])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_stager_that_died_is_reconciled_when_the_store_opens(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    nm.ensure_default()
    before = _store_state(nm)
    assert nm.stage("alive1", None, _ip(nm, 78))  # this process lives: kept
    kept = _store_state(nm)
    p = subprocess.run([sys.executable, "-c", STAGE_AND_DIE, str(root),
                        _ip(nm, 77)], capture_output=True,
                       text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert nm.host.veth_name("dead1") in _links()
    Store(root).close()  # any next command opens the store: the sweeper reconciles
    assert _store_state(nm) == kept
    assert nm.reconcile()["staged"] == []
    nm.unstage("alive1")
    assert _store_state(nm) == before
    assert os.listdir(nm.ns_dir) == []


ADOPT_AND_DIE = r"""
import os, sys
from volmerge.runtime.store import Store
from volmerge.runtime.network import NetworkManager, rows
rows.NetworkRows.mark_up_adopted = lambda self, cid: os._exit(9)  # die mid-adoption
nm = NetworkManager(Store(sys.argv[1]))
nm.stage("crashy", None, sys.argv[2])
nm.connect("crashy", None, "crashy", ip=sys.argv[2], ports=["8080:80"])
"""


def test_a_crash_while_the_staged_namespace_is_adopted_is_swept(nm, root: Path) -> None:  # type: ignore[no-untyped-def]
    """Killed between the pending attachment and its commit: both rows name
    the namespace and the veth; the next store open removes them once."""
    nm.ensure_default()
    before = _store_state(nm)
    p = subprocess.run([sys.executable, "-c", ADOPT_AND_DIE, str(root), _ip(nm, 77)],
                       capture_output=True, text=True)
    assert p.returncode == 9, p.stderr
    assert nm.rows.staged("crashy") is not None and nm.rows.attachment("crashy") is not None
    Store(root).close()  # the sweeper reconciles
    after = _store_state(nm)
    assert [lease.container_id for lease in after.pop("leases")] == ["crashy"]
    assert after == {k: v for k, v in before.items() if k != "leases"}
    assert nm.rows.staged("crashy") is None
    nm.reconcile(alive=lambda cid: False)
    assert _store_state(nm) == before
