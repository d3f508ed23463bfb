"""The issue's "done when", through the real CLI, for both executors."""

from __future__ import annotations

import json
import os
import signal
import time

from volmerge.runtime import sys as rsys

LOOP = "trap 'echo bye; exit 3' TERM; echo started; while true; do sleep 0.05; done"


def _rt(executor: str) -> list[str]:
    return ["--runtime", executor]


def test_run_foreground_prints_and_propagates_exit_code(cli, image, executor, root):
    p = cli("run", "--rm", *_rt(executor), image, "/bin/sh", "-c", "echo hi; echo err >&2; exit 7")
    assert p.returncode == 7, p.stderr
    assert p.stdout == "hi\n"
    assert "err" in p.stderr
    assert os.listdir(root / "containers") == []


def test_run_uses_image_cmd_and_env(cli, image, executor):
    p = cli("run", "--rm", *_rt(executor), "-e", "FOO=bar", image, "/bin/sh", "-c",
            "echo $FOO $PATH; pwd; id -u")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[1:] == ["/", "0"]


def test_detached_lifecycle_leaves_nothing_behind(cli, image, executor, root):
    p = cli("run", "-d", "--name", "web", *_rt(executor), image, "/bin/sh", "-c", LOOP)
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    assert len(cid) == 64
    # the container outlives the CLI process that started it
    ps = cli("ps", "--json")
    [c] = json.loads(ps.stdout)
    assert c["name"] == "web" and c["state"] == "running" and c["pid"]
    assert rsys.is_mountpoint(root / "containers" / cid / "bundle" / "rootfs")
    assert cli("ps", "-q").stdout.split() == [cid[:12]]

    t0 = time.monotonic()
    assert cli("stop", "-t", "5", "web").returncode == 0
    assert time.monotonic() - t0 < 5
    [c] = json.loads(cli("ps", "-a", "--json").stdout)
    assert c["state"] == "exited" and c["exit_code"] == 3
    assert cli("ps", "-q").stdout == ""
    assert not rsys.is_mountpoint(root / "containers" / cid / "bundle" / "rootfs")
    logs = cli("logs", "web")
    assert logs.stdout.split() == ["started", "bye"]

    assert cli("start", "web").returncode == 0
    assert json.loads(cli("inspect", "--json", "web").stdout)[0]["state"] == "running"
    assert cli("restart", "-t", "5", "web").returncode == 0
    assert json.loads(cli("inspect", "--json", "web").stdout)[0]["state"] == "running"
    p = cli("rm", "web")
    assert p.returncode == 2 and "stop it first" in p.stderr
    assert cli("rm", "-f", "web").returncode == 0
    assert cli("ps", "-a", "-q").stdout == ""
    assert os.listdir(root / "containers") == []


def test_stop_kills_after_timeout(cli, image, executor):
    # pid 1 ignores SIGTERM without a handler: stop must fall back to SIGKILL
    cid = cli("run", "-d", *_rt(executor), image, "/bin/sleep", "60").stdout.strip()
    t0 = time.monotonic()
    assert cli("stop", "-t", "0.5", cid).returncode == 0
    assert time.monotonic() - t0 < 4
    [c] = json.loads(cli("inspect", "--json", cid).stdout)
    assert c["state"] == "exited" and c["exit_code"] == 137
    assert cli("rm", cid).returncode == 0


def test_exec_kill_wait(cli, image, executor):
    cid = cli("run", "-d", *_rt(executor), "-e", "A=1", image, "/bin/sh", "-c", LOOP).stdout.strip()
    p = cli("exec", "-e", "B=2", cid, "/bin/sh", "-c", "echo $A$B $(hostname); exit 5")
    assert p.returncode == 5
    assert p.stdout.split() == ["12", cid[:12]]
    p = cli("exec", "-u", "1234:1234", cid, "id")
    assert p.stdout.split()[:2] == ["uid=1234", "gid=1234"]
    assert cli("kill", "-s", "TERM", cid).returncode == 0
    w = cli("wait", cid)
    assert w.stdout.strip() == "3"
    p = cli("exec", cid, "true")
    assert p.returncode == 2 and "not running" in p.stderr
    assert cli("rm", cid).returncode == 0


def test_supervisor_killed_is_reconciled(cli, image, executor, root):
    cid = cli("run", "-d", *_rt(executor), image, "/bin/sh", "-c", LOOP).stdout.strip()
    [c] = json.loads(cli("inspect", "--json", cid).stdout)
    from volmerge.runtime.containers import Engine
    from volmerge.runtime.store import Store

    st = Store(root, sweep=False)
    owner = Engine(st).get(cid).owner_pid
    st.close()
    os.kill(owner, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{owner}") and time.monotonic() < deadline:
        time.sleep(0.02)
    [c] = json.loads(cli("ps", "-a", "--json").stdout)
    assert c["state"] == "exited" and c["exit_code"] == 137
    assert "reconciled" in c["error"]
    assert not rsys.is_mountpoint(root / "containers" / cid / "bundle" / "rootfs")
    assert cli("rm", cid).returncode == 0


def test_container_process_died_shows_exit_code(cli, image, executor):
    cid = cli("run", "-d", *_rt(executor), image, "/bin/sh", "-c", LOOP).stdout.strip()
    pid = json.loads(cli("inspect", "--json", cid).stdout)[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert cli("wait", "--timeout", "10", cid).stdout.strip() == "137"
    [c] = json.loads(cli("ps", "-a", "--json").stdout)
    assert c["state"] == "exited" and c["exit_code"] == 137
    assert cli("rm", cid).returncode == 0


def test_pause_unpause(cli, image, executor):
    cid = cli("run", "-d", *_rt(executor), image, "/bin/sh", "-c", LOOP).stdout.strip()
    assert cli("pause", cid).returncode == 0
    assert json.loads(cli("inspect", "--json", cid).stdout)[0]["state"] == "paused"
    assert "Paused" in cli("ps").stdout
    again = cli("pause", cid)  # one line, exit 2, as a conflict; it stays paused
    assert again.returncode == 2 and "is already paused" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert cli("unpause", cid).returncode == 0
    p = cli("exec", cid, "echo", "alive")
    assert p.stdout.strip() == "alive"
    assert cli("pause", cid).returncode == 0
    assert cli("rm", "-f", cid).returncode == 0


def test_help_texts():
    import subprocess
    import sys

    for verb in ("run", "ps", "stop", "start", "restart", "kill", "rm", "logs", "exec",
                 "inspect", "wait", "pause", "unpause", "create"):
        p = subprocess.run([sys.executable, "-m", "volmerge", verb, "--help"],
                           capture_output=True, text=True)
        assert p.returncode == 0 and "Usage" in p.stdout, verb


def test_read_only_root_with_a_tmpfs(cli, image, executor):
    p = cli("run", "--rm", *_rt(executor), "--read-only", "--tmpfs", "/scratch", image, "/bin/sh", "-c",
            "touch /x 2>/dev/null && echo writable || echo read-only; touch /scratch/y && echo scratch-ok; "
            "cat /etc/hostname >/dev/null && echo files-ok")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["read-only", "scratch-ok", "files-ok"]


def test_env_file(cli, image, executor, tmp_path):
    f = tmp_path / "app.env"
    f.write_text("# settings\n\nA=from file\nB=file\n  C=x=y\nPASSED\nUNSET_ONE\n")
    p = cli("run", "--rm", *_rt(executor), "--env-file", str(f), "-e", "B=option", image,
            "/bin/sh", "-c", 'echo "$A|$B|$C|$PASSED|${UNSET_ONE-unset}"', env={"PASSED": "from caller"})
    assert p.returncode == 0, p.stderr
    assert p.stdout == "from file|option|x=y|from caller|unset\n"


def _in_pty(argv: list[str], env: dict[str, str], after: bytes = b"", send: bytes = b"") -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdin/stdout/stderr; type
    ``send`` once the output shows ``after``."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(argv[0], argv, env)
    out = b""
    while send:
        data = os.read(fd, 65536)
        out += data
        if after in out:
            os.write(fd, send)
            break
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child side is closed
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_run_with_a_terminal(image, executor, root):
    import sys

    code, out = _in_pty([sys.executable, "-m", "volmerge", "run", "-it", "--rm", *_rt(executor), image,
                         "/bin/sh", "-c", "tty; test -t 0 && test -t 1 && echo in-a-tty; echo TERM=$TERM; "
                         "exit 3"], dict(os.environ, VOLMERGE_ROOT=str(root)))
    assert code == 3, out
    assert "/dev/pts/0" in out and "in-a-tty" in out and "TERM=xterm" in out, out
    assert os.listdir(root / "containers") == []


def test_interactive_shell_on_a_terminal(image, executor, root):
    import sys

    code, out = _in_pty([sys.executable, "-m", "volmerge", "run", "-it", "--rm", *_rt(executor), image,
                         "/bin/sh"], dict(os.environ, VOLMERGE_ROOT=str(root)),
                        after=b"# ", send=b"echo typed-$((40 + 2))\nexit 5\n")
    assert code == 5, out
    assert "typed-42" in out, out


def test_exec_on_a_terminal(cli, image, executor, root):
    import sys

    p = cli("run", "-d", "--name", "shell", *_rt(executor), image, "/bin/sh", "-c", LOOP)
    assert p.returncode == 0, p.stderr
    try:
        code, out = _in_pty([sys.executable, "-m", "volmerge", "exec", "-it", "shell", "/bin/sh"],
                            dict(os.environ, VOLMERGE_ROOT=str(root)),
                            after=b"# ", send=b"tty; echo TERM=$TERM; exit 4\n")
        assert code == 4, out
        assert "/dev/pts/" in out and "TERM=xterm" in out and "not a tty" not in out, out
        p = cli("exec", "-t", "shell", "true", input="")
        assert p.returncode == 2 and "not a TTY" in p.stderr
    finally:
        cli("rm", "-f", "shell")


def test_logs_tail_since_and_timestamps(cli, image, executor):
    import re

    # stdout and stderr reach the log through separate pipes, so lines written
    # back to back on both have no defined order: the container waits for a
    # go-ahead file between the two streams and before its last line.
    script = ("echo oops >&2; until [ -e /tmp/go ]; do sleep 0.02; done; "
              "for i in 1 2 3 4; do echo line$i; done; "
              "until [ -e /tmp/late ]; do sleep 0.02; done; echo late")
    p = cli("run", "-d", "--name", "talk", *_rt(executor), image, "/bin/sh", "-c", script)
    assert p.returncode == 0, p.stderr

    def logged(stream, text):
        deadline = time.time() + 10
        while text not in getattr(cli("logs", "talk"), stream) and time.time() < deadline:
            time.sleep(0.05)
        assert text in getattr(cli("logs", "talk"), stream)

    try:
        logged("stderr", "oops")
        assert cli("exec", "talk", "touch", "/tmp/go").returncode == 0
        logged("stdout", "line4")
        mid = time.time()
        assert cli("exec", "talk", "touch", "/tmp/late").returncode == 0
        assert cli("wait", "talk").stdout.strip() == "0"
        assert cli("logs", "talk").stdout.split() == ["line1", "line2", "line3", "line4", "late"]
        tail = cli("logs", "--tail", "2", "talk")
        assert (tail.stdout.split(), tail.stderr.split()) == (["line4", "late"], [])
        tail = cli("logs", "--tail", "6", "talk")
        assert (tail.stdout.split(), tail.stderr.split()) == (
            ["line1", "line2", "line3", "line4", "late"], ["oops"])
        assert cli("logs", "-n", "0", "talk").stdout == ""
        assert len(cli("logs", "--tail", "all", "talk").stdout.split()) == 5
        assert cli("logs", "--since", f"{mid:.6f}", "talk").stdout.split() == ["late"]
        stamped = cli("logs", "-t", "talk").stdout.splitlines()
        assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z line|^\d{4}-.* late$", s) for s in stamped)
        bad = cli("logs", "--tail", "lots", "talk")
        assert bad.returncode == 2 and "--tail" in bad.stderr
    finally:
        cli("rm", "-f", "talk")


def test_dns_options(cli, image, executor):
    p = cli("run", "--rm", *_rt(executor), "--dns", "192.0.2.53", "--dns", "2001:db8::53",
            "--dns-search", "corp.example", image, "cat", "/etc/resolv.conf")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "search corp.example"
    assert [x for x in lines if x.startswith("nameserver")] == ["nameserver 192.0.2.53",
                                                                "nameserver 2001:db8::53"]


def test_create_takes_runs_options_and_start_runs_them(cli, image, executor, root):
    """As docker and podman create: every option of run but -d, -i and -t,
    checked as run checks them; the container runs with them when started."""
    p = cli("create", "--name", "made", *_rt(executor), "--network", "none", "-e", "A=1",
            "-l", "tier=web", "--hostname", "h1", "--health-cmd", "true", "--health-interval",
            "1s", "-w", "/tmp", "--tmpfs", "/scratch", "--read-only", image, "/bin/sh", "-c",
            "echo $A $(hostname) $(pwd) > /scratch/out; cat /scratch/out; sleep 30")
    assert p.returncode == 0, p.stderr
    c = json.loads(cli("inspect", "made", "--json").stdout)[0]
    o = c["options"]
    assert c["state"] == "created" and o["labels"] == {"tier": "web"}
    assert (o["env"], o["hostname"], o["workdir"], o["read_only"]) == ({"A": "1"}, "h1", "/tmp", True)
    assert o["health"]["test"] == ["CMD-SHELL", "true"] and o["health"]["interval"] == 1.0
    assert cli("start", "made").returncode == 0
    deadline = time.monotonic() + 10
    while "1 h1 /tmp" not in cli("logs", "made").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "1 h1 /tmp" in cli("logs", "made").stdout
    assert cli("rm", "-f", "made").returncode == 0


def test_create_refuses_what_run_refuses_and_what_only_a_foreground_run_takes(cli, image, root):
    for bad, says in ((["-p", "bogus"], "bad port spec"), (["--name", "a b"], "invalid container"),
                      (["--health-retries", "-1"], "health-retries"),
                      (["-d"], "No such option"), (["-t"], "No such option")):
        p = cli("create", *bad, image, "/bin/true")
        assert p.returncode == 2 and says in p.stderr, (bad, p.stderr)
    assert os.listdir(root / "containers") == []


def test_create_has_every_option_of_run_but_detach_and_terminal():
    import typer

    from volmerge.cli.cmd_container import NOT_CREATE
    from volmerge.cli.root import app

    cmd = typer.main.get_command(app)
    names = {n: {p.name for p in cmd.commands[n].params} for n in ("run", "create")}  # type: ignore[attr-defined]
    assert names["create"] == names["run"] - set(NOT_CREATE)


def test_logs_follow_ends_quietly_when_the_container_is_removed(cli, image, root):
    """``logs -f`` of a container that ``rm -f`` removes ends as at its exit
    (exit 0, what it wrote printed), not with 'no such container: ID'."""
    import subprocess
    import sys

    p = cli("run", "-d", "--network", "none", "--name", "web", image, "/bin/sh", "-c", LOOP)
    assert p.returncode == 0, p.stderr
    follow = subprocess.Popen([sys.executable, "-m", "volmerge", "logs", "-f", "web"],
                              env=dict(os.environ, VOLMERGE_ROOT=str(root)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "started\n"  # it follows (flushed line by line)
        assert cli("rm", "-f", "web").returncode == 0
        _out, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0 and err == "", err


def _ready(cli, name: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Until container ``name`` has logged ``ready`` (its set-up done)."""
    deadline = time.monotonic() + timeout
    while cli("logs", name).stdout != "ready\n":
        assert time.monotonic() < deadline, f"{name} never logged ready"
        time.sleep(0.05)


def test_exec_user_is_not_blocked_by_a_fifo_passwd(cli, image):
    """``exec -u NAME`` reads the running container's /etc/passwd from the
    host: a container that made it a FIFO hung the command forever (runc's
    own exec would block on it too; what volmerge reads must not)."""
    p = cli("run", "-d", "--network", "none", "--name", "web", image, "/bin/sh", "-c",
            "rm /etc/passwd && mkfifo /etc/passwd && echo ready; exec sleep 300")
    assert p.returncode == 0, p.stderr
    try:
        _ready(cli, "web")
        p = cli("exec", "-u", "nobody", "web", "id", timeout=20)
        assert p.returncode == 2, p.stderr
        assert "user 'nobody' not found in the image's /etc/passwd" in p.stderr
    finally:
        cli("rm", "-f", "web")


def test_exec_finds_commands_on_the_container_s_own_mounts_and_refuses_missing_ones(
        cli, image, executor):
    """exec looks the command up as execvp would, in the root the container's
    first process sees (a tmpfs mounted in it included), a relative path
    from the working directory; a missing one is bad input in one line, as
    ``run`` says it, not runc's log line and exit 255."""
    p = cli("run", "-d", *_rt(executor), "--network", "none", "--name", "web", "--tmpfs",
            "/scratch", image, "/bin/sh", "-c", "cp /bin/busybox /scratch/ && echo ready; "
            "exec sleep 300")
    assert p.returncode == 0, p.stderr
    try:
        _ready(cli, "web")
        assert cli("exec", "web", "/scratch/busybox", "echo", "abs").stdout == "abs\n"
        assert cli("exec", "-w", "/scratch", "web", "./busybox", "echo", "rel").stdout == "rel\n"
        assert cli("exec", "-e", "PATH=/scratch", "web", "busybox", "echo",
                   "path").stdout == "path\n"
        for argv0 in ("nosuchcmd", "/scratch/nosuch", "./nosuch"):
            p = cli("exec", "web", argv0)
            assert p.returncode == 2, (argv0, p.returncode, p.stderr)
            assert p.stderr.strip().splitlines() == [
                f"volmerge: error: command {argv0!r} not found in container web"], p.stderr
    finally:
        cli("rm", "-f", "web")
