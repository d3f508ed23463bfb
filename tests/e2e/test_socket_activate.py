"""``run --socket-activate``: the published port stays open across an
upgrade (issue 19, point 2).  A client connecting every few milliseconds
through the port while the demo app is upgraded never sees a refused
connection and gets every request answered; without socket activation it
sees the gap (docs/network.md says what and for how long).

Everything runs in the test's own network namespace, on loopback."""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.procs import processes_whose

from .conftest import APP, DEMO

PORT = 18090
REQUEST = b"GET /version HTTP/1.0\r\nHost: notes\r\n\r\n"


@dataclass
class _Conn:
    started: float
    sent: bool = False
    data: bytes = b""


@dataclass
class Prober:
    """A client that opens a connection to 127.0.0.1:``port`` every
    ``every`` seconds from a thread of its own, without waiting for the
    earlier ones (non-blocking, one selector), sends ``GET /version`` on
    each and reads the answer.  ``outcomes``: (time, "v1" / "v2" / "http
    CODE" / "refused" / "reset" / "timeout" / an errno name)."""

    port: int
    every: float = 0.005
    timeout: float = 90.0
    outcomes: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 10)

    def counts(self) -> Counter[str]:
        return Counter(o for _, o in self.outcomes)

    def _record(self, what: str) -> None:
        self.outcomes.append((time.monotonic(), what))

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        next_at = time.monotonic()
        while not self._stop.is_set() or sel.get_map():
            now = time.monotonic()
            if not self._stop.is_set() and now >= next_at:
                self._open(sel, now)
                next_at += self.every
            wait = max(0.0, next_at - time.monotonic()) if not self._stop.is_set() else 0.05
            for key, _mask in sel.select(timeout=wait):
                self._step(sel, key.fileobj, key.data)  # type: ignore[arg-type]
            for key in list(sel.get_map().values()):
                if time.monotonic() - key.data.started > self.timeout:
                    self._done(sel, key.fileobj, "timeout")  # type: ignore[arg-type]
        sel.close()

    def _open(self, sel: selectors.BaseSelector, now: float) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.port))
        if err in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, _Conn(now))
        else:
            s.close()
            self._record("refused" if err == errno.ECONNREFUSED else errno.errorcode[err])

    def _step(self, sel: selectors.BaseSelector, s: socket.socket, c: _Conn) -> None:
        if not c.sent:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                # a reset can come as the connect's own error too (SO_ERROR)
                what = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}
                self._done(sel, s, what.get(err, errno.errorcode[err]))
                return
            try:
                s.send(REQUEST)
            except OSError as exc:
                self._done(sel, s, "reset" if exc.errno == errno.ECONNRESET else str(exc))
                return
            c.sent = True
            sel.modify(s, selectors.EVENT_READ, c)
            return
        try:
            chunk = s.recv(65536)
        except OSError as exc:
            self._done(sel, s, "reset" if exc.errno == errno.ECONNRESET else str(exc))
            return
        if chunk:
            c.data += chunk
            return
        head, _, body = c.data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "no answer"
        if status == "200":
            self._done(sel, s, f"v{json.loads(body)['version']}")
        else:
            self._done(sel, s, f"http {status}")

    def _done(self, sel: selectors.BaseSelector, s: socket.socket, what: str) -> None:
        sel.unregister(s)
        s.close()
        self._record(what)


def _upgrade_under_load(vm, args: list[str], rehearse: bool = False) -> tuple[Prober, dict]:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "notes", "-v", "notes-data:/data", *args, DEMO[1], check=True)
    vm("wait", "--healthy", "notes", "--timeout", "60", check=True)
    if rehearse:  # the rehearsal's copy runs on no network and takes no socket
        vm("upgrade", "notes", "--to", DEMO[2], "--rehearse", check=True)
    with Prober(PORT) as probe:
        time.sleep(0.3)
        p = vm("upgrade", "notes", "--to", DEMO[2], "--json")
        _until_answered_by(probe, "v2")
    assert p.returncode == 0, p.stderr
    return probe, json.loads(p.stdout)


def _until_answered_by(probe: Prober, version: str) -> None:
    """Until the last answer came from ``version`` (at most 30 s), and a little more."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not probe.outcomes[-1:][0][1:] == (version,):
        time.sleep(0.05)
    time.sleep(0.3)


def _holders(root) -> set[int]:  # type: ignore[no-untyped-def]
    """The holders of the store ``root`` (a holder's command line names its
    socket, in the store): other test sessions' holders run meanwhile."""
    return (processes_whose("cmdline", b"volmerge.runtime.sockholder")
            & processes_whose("cmdline", f"{root}/sockets/".encode()))


def test_a_socket_activated_app_never_refuses_a_client_during_an_upgrade_or_rollback(vm, loaded_root) -> None:  # type: ignore[no-untyped-def]
    before = _holders(loaded_root)
    probe, report = _upgrade_under_load(vm, args=["--socket-activate", f"{PORT}:8080"],
                                        rehearse=True)
    counts = probe.counts()
    print(f"socket-activated upgrade: {dict(counts)}, timings {report['timings']}")
    assert counts["v1"] > 20 and counts["v2"] > 20, counts
    assert set(counts) == {"v1", "v2"}, counts       # not one refused, reset or unanswered
    # the versions never interleave: the old one stopped taking connections
    # before the new one started, and the socket stayed open in between
    versions = [o for _, o in probe.outcomes]
    assert versions == sorted(versions), "v1 answered after v2"
    # the rollback hands it back the same way
    with Prober(PORT) as probe:
        time.sleep(0.2)
        p = vm("rollback", "notes")
        _until_answered_by(probe, "v1")
    assert p.returncode == 0, p.stderr
    counts = probe.counts()
    assert set(counts) == {"v1", "v2"} and counts["v1"] > 0, counts
    # one holder, handed over twice; ``rm`` ends it and the port refuses again
    assert len(_holders(loaded_root) - before) == 1
    vm("rm", "-f", "notes", check=True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORT), timeout=5).close()
    assert _holders(loaded_root) - before == set()
    assert not list((vm.root / "sockets").iterdir())


def test_without_socket_activation_a_client_sees_the_gap(vm, loaded_root) -> None:  # type: ignore[no-untyped-def]
    """What docs/network.md tells: a published port (-p, NAT into the
    container's namespace) refuses connections from the moment the old
    version stops until the new one listens; the few connections waiting in
    the old version's own backlog when it closes are reset."""
    probe, report = _upgrade_under_load(vm, args=["-p", f"{PORT}:8080"])
    counts = probe.counts()
    failed = [t for t, o in probe.outcomes if not o.startswith("v")]
    gap = (max(failed) - min(failed)) if failed else 0.0
    print(f"plain -p upgrade: {dict(counts)}, refused for {gap:.2f}s, timings {report['timings']}")
    assert counts["v1"] > 20 and counts["v2"] > 0, counts
    assert counts["refused"] > 0, counts
    # refused (nothing listens) or reset (it was in the old version's own
    # backlog when that closed): an error at once, never a hang
    assert set(counts) <= {"v1", "v2", "refused", "reset"}, counts


def test_socket_activate_bad_input_changes_nothing(vm, loaded_root) -> None:  # type: ignore[no-untyped-def]
    def refused(*args: str, why: str) -> None:
        p = vm("run", "-d", "--name", "bad", *args, APP[1])
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.splitlines()) == 1 and why in p.stderr, p.stderr

    before = _holders(loaded_root)
    refused("--socket-activate", "80/udp", why="TCP only")
    refused("--socket-activate", "eighty", why="expected [IPV4:]HOST_PORT")
    refused("--socket-activate", "70000", why="out of range")
    refused("--socket-activate", "::1:80:80", why="expected [IPV4:]HOST_PORT")
    refused("-p", f"{PORT}:80", "--socket-activate", str(PORT), why="given twice")
    refused("--socket-activate", f"192.0.2.1:{PORT}:80", why="not an address of this host")
    with socket.create_server(("127.0.0.1", PORT)):  # a host process listens
        refused("--socket-activate", str(PORT), why="in use")
    with socket.create_server(("127.0.0.1", 443)):   # a privileged port, taken
        refused("--socket-activate", "443", why="in use")
    vm("run", "-d", "--name", "web", "-p", f"{PORT}:80", APP[1], check=True)
    refused("--socket-activate", str(PORT), why="published by container")
    assert [c["name"] for c in json.loads(vm("ps", "-a", "--json").stdout)] == ["web"]
    assert _holders(loaded_root) - before == set()
    assert not list((vm.root / "sockets").iterdir())


def test_holder_survives_stop_and_a_dead_holder_is_replaced(vm, loaded_root) -> None:  # type: ignore[no-untyped-def]
    """The socket belongs to the container, not to one run: a stopped
    container's port still accepts (connections wait, as with systemd's
    socket units); a holder killed (a crash) is replaced at the next start."""
    before = _holders(loaded_root)
    vm("run", "-d", "--name", "notes", "--socket-activate", f"127.0.0.1:{PORT}:8080",
       "-v", "notes-data:/data", DEMO[1], check=True)
    vm("wait", "--healthy", "notes", "--timeout", "60", check=True)
    vm("stop", "notes", check=True)
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as waiting:
        waiting.sendall(REQUEST)
        vm("start", "notes", check=True)
        waiting.settimeout(30)
        assert b'"version": 1' in b"".join(iter(lambda: waiting.recv(65536), b""))
    (holder,) = _holders(loaded_root) - before
    os.kill(holder, 9)
    vm("restart", "notes", check=True)
    vm("wait", "--healthy", "notes", "--timeout", "60", check=True)
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(REQUEST)
        assert b'"version": 1' in b"".join(iter(lambda: s.recv(65536), b""))
    assert len(_holders(loaded_root) - before) == 1


def _answers(port: int = PORT) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(60)
        s.sendall(REQUEST)
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_a_crash_leaves_the_socket_with_the_container_that_runs(vm, loaded_root) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL in an upgrade (after the hand-over, after the successor
    started) and in a rollback (after its hand-over), then ``recover``: the
    socket is with the container that runs, which answers on it."""
    import signal

    def crash(*argv: str, point: str, want_id: str, version: int) -> None:
        p = vm(*argv, env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, p.stderr
        vm("recover", check=True)  # before the commit / the point of no return: undone
        vm("wait", "--healthy", "notes", "--timeout", "60", check=True)
        assert json.loads(vm("inspect", "notes", "--json").stdout)[0]["id"] == want_id, point
        assert f'"version": {version}'.encode() in _answers(), point
        assert [p.name for p in (vm.root / "sockets").iterdir()] == [f"{want_id[:32]}.sock"]

    vm("run", "-d", "--name", "notes", "--socket-activate", f"{PORT}:8080", "-v",
       "notes-data:/data", DEMO[1], check=True)
    old = json.loads(vm("inspect", "notes", "--json").stdout)[0]
    assert old["sockets"] == [f"0.0.0.0:{PORT}->8080/tcp"]
    for point in ("upgrade.after-hand-over-sockets", "upgrade.after-start"):
        crash("upgrade", "notes", "--to", DEMO[2], point=point, want_id=old["id"], version=1)
    vm("upgrade", "notes", "--to", DEMO[2], check=True)
    new_id = json.loads(vm("inspect", "notes", "--json").stdout)[0]["id"]
    crash("rollback", "notes", point="rollback.after-hand-over-sockets", want_id=new_id,
          version=2)
