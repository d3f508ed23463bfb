"""The warm command server (volmerge/cli/server.py, client.py): commands it
runs behave exactly as commands run in the client's own process — output,
exit codes, stdin, working directory, environment, signals, terminals — and
it declines what it cannot serve faithfully."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import alive, cmdline, proc_stat

from .test_cli_lifecycle import LOOP, _in_pty

VM = [sys.executable, "-m", "volmerge"]


def _env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "VOLMERGE_ROOT": str(root), "VOLMERGE_SERVER": "1", **extra}


def _vm(env: dict[str, str], *args: str, input: str | None = None, cwd: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*VM, *args], env=env, input=input, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@contextlib.contextmanager
def _started(env: dict[str, str], *args: str):
    """A command running in the background, once it printed "started"."""
    proc = subprocess.Popen([*VM, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _status(env: dict[str, str]) -> dict:
    p = _vm(env, "server", "status", "--json")
    info = json.loads(p.stdout)
    assert (p.returncode == 0) == info["running"], p
    return info


def _server_pids(root: Path) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            cmd = cmdline(pid).split(b"\0")
            if b"volmerge.cli.server" in cmd and os.fsencode(str(root)) in cmd:
                out.append(int(pid))
    return out


@pytest.fixture
def served(root: Path, image: str):
    """A running command server for the test's store; stopped afterwards."""
    env = _env(root)
    p = _vm(env, "server", "start")
    assert p.returncode == 0, p.stderr
    assert "command server pid" in p.stdout
    try:
        yield env
    finally:
        p = _vm(env, "server", "stop")
        assert p.returncode == 0, p.stderr
        assert _server_pids(root) == []
        assert not (root / "cli.sock").exists()


def test_served_run_keeps_the_foreground_contract(served, image, executor, root):
    before = _status(served)["served"]
    p = _vm(served, "run", "--rm", "--runtime", executor, "--network", "none", image,
            "/bin/sh", "-c", "echo hi; echo err >&2; exit 7")
    assert p.returncode == 7, p.stderr
    assert p.stdout == "hi\n"
    assert p.stderr == "err\n"
    assert _status(served)["served"] == before + 1  # it went through the server
    assert os.listdir(root / "containers") == []


def test_served_command_gets_cwd_environment_and_stdin(served, image, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "app.env").write_text("A=from-file\n")
    env = dict(served, PASSED="from caller")
    p = _vm(env, "run", "--rm", "-i", "--network", "none", "--env-file", "app.env", "-e", "PASSED",
            image, "/bin/sh", "-c", 'cat; echo "$A|$PASSED"', input="typed\n", cwd=str(work))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "typed\nfrom-file|from caller\n"
    # a relative path on the command line is the client's, not the server's
    p = _vm(env, "run", "--rm", "--env-file", "missing.env", image, "true", cwd=str(work))
    assert p.returncode == 2 and "missing.env" in p.stderr


def test_signals_reach_the_served_command(served, image, executor):
    before = _status(served)["served"]
    with _started(served, "run", "--rm", "--runtime", executor, "--network", "none", image,
                  "/bin/sh", "-c", LOOP) as proc:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert out == "bye\n"
    assert _status(served)["served"] == before + 1


def test_served_detached_container_outlives_the_command(served, image):
    p = _vm(served, "run", "-d", "--name", "web", "--network", "none", image, "/bin/sh", "-c", LOOP)
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)
    ps = _vm(served, "ps", "--json")
    assert [c["name"] for c in json.loads(ps.stdout)] == ["web"]
    assert json.loads(ps.stdout)[0]["state"] == "running"
    assert _vm(served, "stop", "-t", "5", "web").returncode == 0
    assert "bye" in _vm(served, "logs", "web").stdout
    assert _vm(served, "rm", "web").returncode == 0


def test_served_run_on_a_terminal(served, image, executor, root):
    before = _status(served)["served"]
    code, out = _in_pty([*VM, "run", "-it", "--rm", "--runtime", executor, "--network", "none",
                         image, "/bin/sh"], served, after=b"# ",
                        send=b"tty; echo TERM=$TERM; echo typed-$((40 + 2)); exit 5\n")
    assert code == 5, out
    assert "/dev/pts/0" in out and "TERM=xterm" in out and "typed-42" in out, out
    assert _status(served)["served"] == before + 1


def test_a_client_in_another_namespace_runs_the_command_itself(served, image):
    before = _status(served)["served"]
    p = subprocess.run(["unshare", "--net", *VM, "run", "--rm", "--network", "none", image,
                        "/bin/sh", "-c", "echo here; exit 4"], env=served, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 4, p.stderr
    assert p.stdout == "here\n"
    assert _status(served)["served"] == before


def test_malformed_requests_do_not_stop_the_server(served, root):
    for junk in (b"", b"\x00\x00\x00\x05hello", b"\xff" * 64):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(root / "cli.sock"))
        s.sendall(junk)
        s.close()
    p = _vm(served, "ps", "-q")
    assert p.returncode == 0, p.stderr
    assert _status(served)["running"]


def test_stop_lets_running_commands_finish(served, image, root):
    with _started(served, "run", "--rm", "--network", "none", image, "/bin/sh", "-c",
                  "echo started; sleep 1; exit 4") as proc:
        pid = _status(served)["pid"]
        stopper = subprocess.Popen([*VM, "server", "stop"], env=served, stdout=subprocess.PIPE,
                                   text=True)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 4, err
        assert stopper.wait(timeout=30) == 0
        assert f"pid {pid}" in stopper.stdout.read()
        stopper.stdout.close()
    assert _server_pids(root) == []


def test_a_command_starts_the_server_and_it_exits_when_idle(root, image):
    env = _env(root, VOLMERGE_SERVER_IDLE="1")
    assert not _status(env)["running"]
    assert _vm(env, "ps").returncode == 0  # no server: runs here, then starts one
    deadline = time.monotonic() + 30
    while not (root / "cli.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (root / "cli.sock").exists()
    deadline = time.monotonic() + 30
    while _server_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _server_pids(root) == []
    assert not (root / "cli.sock").exists()


def test_server_off_starts_nothing(root, image):
    env = _env(root, VOLMERGE_SERVER="0")
    assert _vm(env, "ps").returncode == 0
    time.sleep(0.5)
    assert _server_pids(root) == [] and not (root / "cli.sock").exists()


def test_status_and_stop_without_a_server(root, image):
    env = _env(root)
    p = _vm(env, "server", "status")
    assert p.returncode == 1 and p.stdout.startswith("no command server for")
    assert _vm(env, "server", "stop").returncode == 0
    assert _server_pids(root) == []


def test_code_changed_on_disk_is_seen(tmp_path):
    from volmerge.cli import server

    f = tmp_path / "mod.py"
    f.write_text("x = 1\n")
    st = f.stat()
    prints = {str(f): (st.st_mtime_ns, st.st_size)}
    assert not server._stale(prints)
    f.write_text("x = 22\n")
    assert server._stale(prints)
    f.unlink()
    assert server._stale(prints)
    # what a server fingerprints: the files of ours it has loaded
    assert any(p.endswith("volmerge/cli/server.py") for p in server.fingerprint())


def test_client_reads_the_store_root_like_the_cli():
    from volmerge.cli import client

    assert client.store_root(["--root", "/x/y", "ps"]) == "/x/y"
    assert client.store_root(["--root=/x/z", "run", "img"]) == "/x/z"
    assert client.server_command(["--root", "/x", "server", "stop"])
    assert client.server_command(["server", "status"])
    assert not client.server_command(["run", "server"])


def test_a_killed_server_costs_the_running_command_nothing(served, image, root):
    with _started(served, "run", "--rm", "--network", "none", image, "/bin/sh", "-c",
                  "echo started; sleep 1; echo done; exit 6") as proc:
        os.kill(_status(served)["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 6, err
    assert out == "done\n"
    assert os.listdir(root / "containers") == []
    # its socket is left behind: the next server takes its place
    assert (root / "cli.sock").exists() and _server_pids(root) == []
    assert _vm(served, "server", "start").returncode == 0
    p = _vm(served, "run", "--rm", "--network", "none", image, "/bin/sh", "-c", "exit 9")
    assert p.returncode == 9, p.stderr
    assert _status(served)["served"] == 1


def _command_process(server_pid: int) -> int:
    """The served command's process: the server's child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            stat = proc_stat(pid) if pid.isdigit() else None
            if stat is not None and int(stat[1]) == server_pid and stat[0] != b"Z":
                return int(pid)
        time.sleep(0.02)
    raise AssertionError("no command process")


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_a_command_killed_by_a_signal_kills_its_client_alike(served, image):
    with _started(served, "run", "--rm", "--network", "none", image, "/bin/sh", "-c",
                  "echo started; sleep 30") as proc:
        os.kill(_command_process(_status(served)["pid"]), signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # as if the CLI process itself had been killed
    assert _vm(served, "rm", "-f", *_vm(served, "ps", "-aq").stdout.split()).returncode == 0


def test_a_killed_client_takes_its_command_with_it(served, image):
    with _started(served, "run", "--rm", "--network", "none", image, "/bin/sh", "-c",
                  "echo started; sleep 30") as proc:
        command = _command_process(_status(served)["pid"])
        proc.kill()
        proc.wait(timeout=30)
        assert _gone(command)  # as the CLI process it stands for would be
    assert _vm(served, "rm", "-f", *_vm(served, "ps", "-aq").stdout.split()).returncode == 0


def test_a_server_whose_code_changed_declines_and_goes(root, image, tmp_path):
    """A package installed or upgraded on sys.path (here: a file added to a
    directory on PYTHONPATH) makes the running server stale: the next
    command runs in its own process and the server exits."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    env = _env(root, PYTHONPATH=str(libdir))
    assert _vm(env, "server", "start").returncode == 0
    pid = _status(env)["pid"]
    assert _vm(env, "ps").returncode == 0
    assert _status(env)["served"] == 1
    (libdir / "newpkg.py").write_text("")  # the directory changed
    p = _vm(env, "ps", "-q")
    assert p.returncode == 0, p.stderr
    assert _gone(pid)
    assert _server_pids(root) == [] and not (root / "cli.sock").exists()
    # that command found a server (a stale one), so it started none itself
    assert _vm(env, "server", "status").returncode == 1


def _fake_server(root: Path):
    """A listener on the store's socket that the test answers by hand."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(root / "cli.sock"))
    s.listen(1)
    return s


def test_a_declined_command_runs_in_its_own_process(root, image):
    env = _env(root)
    listener = _fake_server(root)
    try:
        proc = subprocess.Popen([*VM, "ps", "-q"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.sendall(b"N other namespaces\n")
        out, err = proc.communicate(timeout=60)
        conn.close()
    finally:
        listener.close()
        (root / "cli.sock").unlink()
    assert proc.returncode == 0, err
    assert out == "" and err == ""
    time.sleep(0.3)
    assert _server_pids(root) == []  # a server was there: none started


def test_ctrl_c_before_the_command_started_interrupts_the_client(root, image):
    env = _env(root)
    listener = _fake_server(root)
    try:
        proc = subprocess.Popen([*VM, "run", "--rm", "--network", "none", image, "true"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = listener.accept()
        conn.recv(1 << 16)  # the request: the client now waits for the answer
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        conn.close()  # the server went away before starting anything
        out, err = proc.communicate(timeout=60)
    finally:
        listener.close()
        (root / "cli.sock").unlink()
    assert proc.returncode == 130, err
    assert err == "volmerge: interrupted\n"
    assert os.listdir(root / "containers") == []


def test_stop_right_after_a_command_stops_the_server_it_started(root, image):
    env = _env(root)
    assert _vm(env, "ps").returncode == 0  # no server: it runs here and starts one
    p = _vm(env, "server", "stop")  # while that one may still be importing
    assert p.returncode == 0
    assert p.stdout.startswith("stopped command server pid"), p.stdout
    assert _server_pids(root) == [] and not (root / "cli.sock").exists()
