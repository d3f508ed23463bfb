"""``--socket-activate``: the option's syntax, the socket holder
(runtime/sockholder.py) and what a container is given, with both executors.
Everything binds on loopback of the session's own network namespace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import requires_root
from tests.procs import processes_whose
from volmerge.runtime.errors import BadInput, NotDone
from volmerge.runtime.options import (
    PortSpec,
    RunOptions,
    check_socket_activate,
    parse_port,
    parse_socket_activate,
)

PORT = 18110


# -- the syntax (no root) ------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("8080", PortSpec(8080, 8080, "tcp", "")),
    ("18080:8080", PortSpec(18080, 8080, "tcp", "")),
    ("127.0.0.1:18080:8080", PortSpec(18080, 8080, "tcp", "127.0.0.1")),
    ("8080/tcp", PortSpec(8080, 8080, "tcp", "")),
])
def test_socket_activate_syntax(text: str, want: PortSpec) -> None:
    assert parse_socket_activate(text) == want


@pytest.mark.parametrize(("text", "why"), [
    ("8080/udp", "TCP only"), ("", "expected"), ("http", "expected"), ("+80", "expected"),
    (" 80", "expected"), ("80:", "expected"), ("1:2:3:4", "expected"), ("::1:80:80", "expected"),
    ("localhost:80:80", "expected"), ("0", "out of range"), ("65536", "out of range"),
])
def test_bad_socket_activate_is_one_line(text: str, why: str) -> None:
    with pytest.raises(BadInput, match=why) as e:
        parse_socket_activate(text)
    assert "\n" not in str(e.value)


def test_a_socket_activated_port_is_not_also_published() -> None:
    def opts(ports: list[str], sa: list[str]) -> RunOptions:
        return RunOptions(image="x", ports=[parse_port(p) for p in ports],
                          socket_activate=[parse_socket_activate(s) for s in sa])

    check_socket_activate(opts(["8080:80", "9090:90/udp"], ["9090", "127.0.0.1:8081:81"]))
    check_socket_activate(opts(["127.0.0.1:8080:80"], ["127.0.0.2:8080:80"]))
    for ports, sa in ((["8080:80"], ["8080"]), (["127.0.0.1:8080:80"], ["8080"]),
                      (["0.0.0.0:8080:80"], ["127.0.0.1:8080:80"]), ([], ["8080", "8080:81"])):
        with pytest.raises(BadInput, match="given twice"):
            check_socket_activate(opts(ports, sa))


def test_options_keep_their_sockets_through_json() -> None:
    o = RunOptions(image="x", socket_activate=[parse_socket_activate("127.0.0.1:18080:8080")])
    assert RunOptions.from_json(o.to_json()) == o
    old = o.to_json()
    del old["socket_activate"]  # a record written before the option existed
    assert RunOptions.from_json(old).socket_activate == []


def test_the_environment_a_container_reads_its_sockets_by() -> None:
    from volmerge.runtime import sockholder

    specs = [PortSpec(18080, 8080), PortSpec(18443, 443)]
    assert sockholder.env(specs) == ["LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=8080:443"]


# -- the holder (root) -----------------------------------------------------------------

def _holders(root: Path) -> set[int]:
    """The holders of the store ``root`` (a holder's command line names its
    socket, in the store): other test sessions' holders run meanwhile."""
    return (processes_whose("cmdline", b"volmerge.runtime.sockholder")
            & processes_whose("cmdline", f"{root}/sockets/".encode()))


A, B = "a" * 64, "b" * 64


@requires_root
def test_holder_holds_hands_over_and_closes(tmp_path: Path) -> None:
    from volmerge.runtime import sockholder as sh

    specs = [PortSpec(PORT, 80, "tcp", "127.0.0.1")]
    before = _holders(tmp_path)
    sh.ensure(tmp_path, A, specs)
    try:
        d = tmp_path / "sockets"
        assert os.stat(d).st_mode & 0o777 == 0o700
        assert os.stat(d / f"{A[:32]}.sock").st_mode & 0o777 == 0o600
        (fd,) = sh.fetch(tmp_path, A, specs)
        with socket.socket(fileno=fd) as got:
            assert got.getsockname() == ("127.0.0.1", PORT)
            assert not os.get_inheritable(got.fileno())
        sh.ensure(tmp_path, A, specs)  # held: the same holder
        assert len(_holders(tmp_path) - before) == 1
        # a connection made while nobody accepts waits in the backlog
        with socket.create_connection(("127.0.0.1", PORT), timeout=5) as client:
            assert sh.hand_over(tmp_path, A, B)
            assert not sh.hand_over(tmp_path, A, B)  # done already
            with pytest.raises(NotDone, match="gone"):
                sh.fetch(tmp_path, A, specs)
            with pytest.raises(NotDone, match="other sockets"):
                sh.fetch(tmp_path, B, [PortSpec(PORT, 81, "tcp", "127.0.0.1")])
            (fd,) = sh.fetch(tmp_path, B, specs)
            with socket.socket(fileno=fd) as lsock:
                conn, _ = lsock.accept()
                conn.sendall(b"hi")
                conn.close()
            assert client.recv(2) == b"hi"
        # other specs: the holder is replaced (the old socket closed first)
        other = [PortSpec(PORT + 1, 80, "tcp", "127.0.0.1")]
        sh.ensure(tmp_path, B, other)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", PORT), timeout=5).close()
        with pytest.raises(BadInput, match="in use"):
            sh.ensure(tmp_path, A, other)
        assert not (d / f"{A[:32]}.sock").exists()
    finally:
        sh.close(tmp_path, A)
        sh.close(tmp_path, B)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORT + 1), timeout=5).close()
    _until(lambda: not (_holders(tmp_path) - before))
    assert not list((tmp_path / "sockets").iterdir())


def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond()


@requires_root
def test_the_holder_answers_root_only(tmp_path: Path) -> None:
    """Even with the modes loosened (they are 0700 / 0600), another user
    connecting gets no socket: the holder checks its peer (SO_PEERCRED)."""
    from volmerge.runtime import sockholder as sh

    specs = [PortSpec(PORT, 80, "tcp", "127.0.0.1")]
    sh.ensure(tmp_path, A, specs)
    try:
        path = tmp_path / "sockets" / f"{A[:32]}.sock"
        os.chmod(path.parent, 0o711)
        os.chmod(path, 0o666)
        dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            f"s.connect('/proc/self/fd/{dfd}/{path.name}')\n"
            "try:\n"
            "    s.send(b'get')\n"
            "    msg, fds, _, _ = socket.recv_fds(s, 4096, 4)\n"
            "except (ConnectionResetError, BrokenPipeError):  # dropped at once\n"
            "    msg, fds = b'', []\n"
            "print('connected', len(msg), len(fds))\n")
        try:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                sys.executable, "-c", probe], capture_output=True, text=True,
                               timeout=60, pass_fds=(dfd,))
        finally:
            os.close(dfd)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["connected", "0", "0"]
        (fd,) = sh.fetch(tmp_path, A, specs)  # root still is answered
        os.close(fd)
    finally:
        sh.close(tmp_path, A)


# -- what a container is given, per executor ----------------------------------------------

@requires_root
def test_the_container_gets_its_socket_at_fd_3_and_nothing_else(engine, busybox_rootfs,
                                                                  tmp_path: Path) -> None:
    from volmerge.runtime import sockholder as sh
    from volmerge.runtime.options import Mount

    out = tmp_path / "out"
    out.mkdir()
    script = "env | grep ^LISTEN_ | sort > /out/env.$$; touch /out/done.$$; sleep 30"
    before = _holders(engine.store.root)
    c = engine.create(RunOptions(image=str(busybox_rootfs), name="sa", detach=True,
                                 command=["/bin/sh", "-c", script],
                                 mounts=[Mount("bind", "/out", str(out))],
                                 socket_activate=[parse_socket_activate(f"127.0.0.1:{PORT}:80")]))
    plain = engine.create(RunOptions(image=str(busybox_rootfs), name="plain", detach=True,
                                     command=["/bin/sh", "-c", script.replace("/out/", "/out/p")],
                                     mounts=[Mount("bind", "/out", str(out))]))
    engine.start(c.id)
    engine.start(plain.id)
    _until(lambda: (out / "done.1").exists() and (out / "pdone.1").exists(), 30)
    (fd,) = sh.fetch(engine.store.root, c.id, engine.get(c.id).options.socket_activate)
    try:
        ino = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    def fds(cid: str) -> list[int]:  # of the container's first process (sleeping), from here
        return sorted(int(n) for n in os.listdir(f"/proc/{engine.get(cid).pid}/fd"))

    assert fds(c.id) == [0, 1, 2, 3]
    assert os.readlink(f"/proc/{engine.get(c.id).pid}/fd/3") == f"socket:[{ino}]"  # the holder's
    assert (out / "env.1").read_text().split() == ["LISTEN_FDNAMES=80", "LISTEN_FDS=1",
                                                   "LISTEN_PID=1"]
    assert fds(plain.id) == [0, 1, 2]                                   # the other: nothing
    assert (out / "penv.1").read_text() == ""
    engine.remove(plain.id, force=True)
    engine.remove(c.id, force=True)
    _until(lambda: not (_holders(engine.store.root) - before))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORT), timeout=5).close()


SERVE_ONCE = ("import os, socket\n"
              "s = socket.socket(fileno=3)\n"
              "c, _ = s.accept()\n"
              "links = sorted(n.split(':')[0].strip() for n in open('/proc/net/dev') if ':' in n)\n"
              "c.sendall(f\"{os.environ['LISTEN_FDNAMES']} {os.getpid()} {links}\".encode())\n"
              "c.close()\n")


@requires_root
def test_a_container_with_no_network_serves_on_its_socket(engine, store, fixture_image) -> None:
    """The socket lives on the host: a container whose own namespace has
    only ``lo`` accepts on it all the same.  A foreground ``run --rm``:
    supervised by this process, its socket closed when it is removed."""
    import threading

    from volmerge.runtime.images import ImageStore

    ImageStore(store).load(fixture_image("python"))
    before = _holders(engine.store.root)
    got: list[str] = []

    def client() -> None:
        deadline = time.monotonic() + 30
        while True:  # until the run has bound the socket
            try:
                s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        with s:
            s.settimeout(30)
            got.append(s.recv(4096).decode())

    t = threading.Thread(target=client)
    t.start()
    code = engine.run(RunOptions(image="localhost/volmerge-fixture/python:3.11", rm=True,
                                 command=["python3", "-c", SERVE_ONCE],
                                 socket_activate=[parse_socket_activate(f"127.0.0.1:{PORT}:80")]))
    t.join(30)
    assert code == 0 and got == ["80 1 ['lo']"]
    assert engine.list(all=True) == []
    _until(lambda: not (_holders(engine.store.root) - before))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORT), timeout=5).close()


@requires_root
def test_a_restarted_container_serves_on_the_same_socket(engine, store, fixture_image) -> None:
    """``--restart always``: the supervisor keeps the sockets for every run."""
    from volmerge.runtime.images import ImageStore
    from volmerge.runtime.options import RestartPolicy

    ImageStore(store).load(fixture_image("python"))
    c = engine.create(RunOptions(image="localhost/volmerge-fixture/python:3.11", detach=True,
                                 command=["python3", "-c", SERVE_ONCE], name="again",
                                 restart=RestartPolicy("always"),
                                 socket_activate=[parse_socket_activate(f"127.0.0.1:{PORT}:80")]))
    engine.start(c.id)
    for _ in range(3):  # each answer is one run: the container exits and comes back
        with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
            s.settimeout(30)
            assert s.recv(4096).decode() == "80 1 ['lo']"
    assert engine.get(c.id).restart_count >= 2
    engine.remove(c.id, force=True)
