"""Bad input, through the real CLI: a one-line error, exit 2, and nothing in
the store changed (issue 14, points 7 and 8).

Each case runs against a store holding an image, a container using it, a
volume without snapshots and a network; the store is fingerprinted before
and after (the state database's logical dump, and every file below the root
with its type, mode, size and mtime)."""

from __future__ import annotations

import os
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

IMG = "localhost/volmerge-fixture/busybox:latest"
HEX64 = "ab" * 32


def fingerprint(root: Path) -> tuple[list[str], list[tuple]]:
    """(the state database's dump, the files below ``root``).  Left out: the
    database's own files (compared by content through the dump, whatever
    its -wal/-shm/-journal files do), the command server's socket, and
    directory mtimes (a file made and removed again leaves nothing)."""
    with sqlite3.connect(f"file:{root / 'state.db'}?mode=ro", uri=True) as db:
        dump = list(db.iterdump())
    files = []
    for dirpath, dirs, names in os.walk(root):
        for n in sorted(dirs + names):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if rel.startswith("state.db") or rel == "cli.sock":
                continue
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                files.append((rel, "dir", st.st_mode))
            else:
                files.append((rel, st.st_mode, st.st_size, st.st_mtime_ns))
    return dump, sorted(files)


@pytest.fixture
def prepared(cli, root: Path, fixture_image, tmp_path: Path) -> dict[str, str]:
    """A store with the busybox image, a created container ``web`` using it,
    a volume ``v`` without snapshots and a network ``net``; and, outside it,
    inputs for the sql and merge cases.  Every component's tables exist
    before the fingerprint is taken (a first use creates them)."""
    for args in (["image", "load", str(fixture_image("busybox"))],
                 ["create", "--name", "web", IMG, "true"],
                 ["volume", "create", "v"],
                 ["network", "create", "net"],
                 ["history", "web"], ["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        p = cli(*args)
        assert p.returncode == 0, (args, p.stderr)
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)")
        c.execute("INSERT INTO t(a) VALUES ('x')")
    c.close()
    new = tmp_path / "new.db"
    with sqlite3.connect(new) as c:
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, v INTEGER NOT NULL)")
    c.close()
    (tmp_path / "f").write_text("x\n")
    return {"tmp": str(tmp_path), "db": str(db), "new": str(new), "f": str(tmp_path / "f")}


CASES: dict[str, tuple[list[str], str]] = {
    # run: checked in runopts, reached by the fast path and by typer (-d, --rm)
    "run name with newline": (["run", "--rm", "--name", "x\n", IMG, "true"],
                              "invalid container name"),
    "run name with newline (-d)": (["run", "-d", "--name", "web\n", IMG, "true"],
                                   "invalid container name"),
    "create name with newline": (["create", "--name", "web\n", IMG, "true"],
                                 "invalid container name"),
    "run pids-limit -5": (["run", "--rm", "--pids-limit", "-5", IMG, "true"], "--pids-limit"),
    "run memory beyond int64": (["run", "--rm", "--memory", "99999999999g", IMG, "true"],
                                "too large"),
    "run pids-limit 0": (["run", "--rm", "--pids-limit", "0", IMG, "true"], "--pids-limit"),
    "run health-retries -1": (["run", "--rm", "--health-cmd", "true", "--health-retries", "-1",
                               IMG, "true"], "--health-retries"),
    "run health-tcp 99999": (["run", "--rm", "--health-tcp", "99999", IMG, "true"], "1..65535"),
    "run health-tcp 0": (["run", "-d", "--health-tcp", "0", IMG, "true"], "1..65535"),
    "run health-http not a url": (["run", "--rm", "--health-http", "not a url", IMG, "true"],
                                  "--health-http"),
    "run health-http ftp": (["run", "--rm", "--health-http", "ftp://host/x", IMG, "true"],
                            "--health-http"),
    "run health-http bad port": (["run", "--rm", "--health-http", "http://h:99999/", IMG, "true"],
                                 "--health-http"),
    "run hostname with space and slashes": (["run", "--rm", "--hostname", "a b/../c", IMG, "true"],
                                            "invalid hostname"),
    "run hostname with newline": (["run", "--rm", "--hostname", "web\n", IMG, "true"],
                                  "invalid hostname"),
    "run hostname label too long": (["run", "--rm", "--hostname", "a" * 64, IMG, "true"],
                                    "invalid hostname"),
    "run no-healthcheck with health-cmd": (["run", "--rm", "--no-healthcheck", "--health-cmd",
                                            "true", IMG, "true"], "conflicts"),
    "run -d no-healthcheck with interval": (["run", "-d", "--no-healthcheck", "--health-interval",
                                             "5s", IMG, "true"], "conflicts"),
    "run label without a name": (["run", "--rm", "-l", "=v", IMG, "true"], "empty name"),
    "create label without a name": (["create", "-l", " =v", IMG, "true"], "empty name"),
    "run add-host without ip": (["run", "--rm", "--add-host", "db", IMG, "true"], "--add-host"),
    "run add-host newline in ip": (["run", "--rm", "--add-host", "db:192.0.2.1\nevil", IMG,
                                    "true"], "--add-host"),
    "run uid out of range": (["run", "--rm", "-u", "99999999999", IMG, "true"], "out of range"),
    "run gid out of range": (["run", "--rm", "-u", "0:2147483648", IMG, "true"], "out of range"),
    "run user with newline": (["run", "--rm", "-u", "root\n", IMG, "true"], "invalid -u"),
    "run ip 1.2.3 makes no network": (["run", "--rm", "--ip", "1.2.3", IMG, "true"], "--ip"),
    "run dns-search with newline": (["run", "--rm", "--dns-search", "a\nnameserver 192.0.2.66",
                                     IMG, "true"], "bad --dns-search"),
    "run dns-search with space": (["run", "--rm", "--dns-search", "a b", IMG, "true"],
                                  "bad --dns-search"),
    "run volume name with newline": (["run", "--rm", "-v", "v\n:/data", IMG, "true"],
                                     "invalid volume name"),
    "exec uid out of range": (["exec", "-u", "99999999999", "web", "true"], "out of range"),
    "exec relative workdir": (["exec", "-w", "rel", "web", "pwd"], "must be absolute"),
    "stop -t nan": (["stop", "-t", "nan", "web"], "invalid -t nan"),
    "stop -t -2": (["stop", "-t", "-2", "web"], "invalid -t -2"),
    "restart -t inf": (["restart", "-t", "inf", "web"], "invalid -t inf"),
    "wait --timeout nan": (["wait", "--timeout", "nan", "web"], "invalid --timeout nan"),
    "logs --since nan": (["logs", "--since", "nan", "web"], "bad --since"),
    "upgrade stop-timeout nan": (["upgrade", "web", "--to", IMG, "--stop-timeout", "nan"],
                                 "--stop-timeout"),
    "upgrade health-timeout nan": (["upgrade", "web", "--to", IMG, "--health-timeout", "nan"],
                                   "--health-timeout"),
    "rollback stop-timeout inf": (["rollback", "web", "--stop-timeout", "inf"],
                                  "invalid --stop-timeout"),
    "upgrade health-tcp 0": (["upgrade", "web", "--to", IMG, "--health-tcp", "0"], "1..65535"),
    "upgrade health-http not a url": (["upgrade", "web", "--to", IMG, "--health-http", "a b"],
                                      "--health-http"),
    # usage errors (click's): one line naming the command's help, as every other bad input
    "unknown option": (["run", "--nosuch", IMG, "true"], "No such option: --nosuch"),
    "unknown command": (["nosuchcmd"], "No such command 'nosuchcmd'. (see 'volmerge --help')"),
    "missing argument": (["volume", "create"],
                         "Missing argument 'name'. (see 'volmerge volume create --help')"),
    "option value of the wrong type": (["stop", "-t", "abc", "web"], "'abc' is not a valid float"),
    "unknown option of a subcommand": (["image", "ls", "--bogus"],
                                       "(see 'volmerge image ls --help')"),
    # names of other kinds
    "history of no container": (["history", "nosuch"], "no such container"),
    "image tag as a digest": (["image", "tag", IMG, "sha256:abcd"], "digest algorithm"),
    "image tag as an id": (["image", "tag", IMG, HEX64], "image id"),
    "image tag with newline": (["image", "tag", IMG, "new:t\n"], "invalid image reference"),
    "image tag with unicode": (["image", "tag", IMG, "new:tä"], "bad tag"),
    "network create name with newline": (["network", "create", "n\n"], "network name"),
    "network create taken name with newline": (["network", "create", "net\n"], "network name"),
    "volume create name with newline": (["volume", "create", "v\n"], "invalid"),
    # promises the docs make
    "image rm of a used image": (["image", "rm", IMG], "used by container"),
    "image rm -f of a used image": (["image", "rm", "-f", IMG], "used by container"),
    "volume rollback without a snapshot": (["volume", "rollback", "v"], "no snapshot"),
    "volume snapshot of no volume": (["volume", "snapshot", "nosuch"], "no such volume"),
    "volume rollback of no volume": (["volume", "rollback", "nosuch"], "no such volume"),
    "volume compact of no volume": (["volume", "compact", "nosuch"], "no such volume"),
    # sql and merge: nothing written outside either
    "sql schema unknown dialect": (["sql", "schema", "--dialect", "bogus", "{db}"], "bogus"),
    "sql replay unknown from-dialect": (["sql", "replay", "{db}", "--schema", "{new}",
                                         "--from-dialect", "bogus", "-o", "{tmp}/out.db"], "bogus"),
    "sql replay default not sql": (["sql", "replay", "{db}", "--schema", "{new}",
                                    "--default", "t.v=)))(((", "-o", "{tmp}/out.db"],
                                   "not a valid SQL expression"),
    "sql replay default two statements": (["sql", "replay", "{db}", "--schema", "{new}", "--default",
                                           "t.v=1; DROP TABLE t", "-o", "{tmp}/out.db"],
                                          "not a valid SQL expression"),
    "merge /proc/self/mem": (["merge", "{f}", "/proc/self/mem", "{f}", "-o", "{tmp}/out"],
                             "kernel file system"),
    "merge /sys directory": (["merge", "/sys/kernel", "/sys/kernel", "/sys/kernel",
                              "-o", "{tmp}/out"], "kernel file system"),
    "merge a device": (["merge", "{f}", "/dev/null", "{f}", "-o", "{tmp}/out"],
                       "neither a regular file nor a directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, cli, root: Path, prepared: dict[str, str],  # type: ignore[no-untyped-def]
                   tmp_path: Path) -> None:
    argv, needle = CASES[case]
    args = [a.format(**prepared) for a in argv]
    before = fingerprint(root)
    outside = sorted(os.listdir(tmp_path))
    interfaces = sorted(os.listdir("/sys/class/net"))
    p = cli(*args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith("volmerge: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr and needle in p.stderr, p.stderr
    after = fingerprint(root)
    assert after[0] == before[0], sorted(set(after[0]) ^ set(before[0]))
    assert after[1] == before[1], sorted(set(after[1]) ^ set(before[1]))
    assert sorted(os.listdir(tmp_path)) == outside
    assert sorted(os.listdir("/sys/class/net")) == interfaces


# -- the promises, the other way round: what is still allowed ----------------------

def test_image_rm_once_no_container_uses_it(cli, prepared) -> None:  # type: ignore[no-untyped-def]
    assert cli("rm", "web").returncode == 0
    p = cli("image", "rm", IMG)
    assert p.returncode == 0, p.stderr
    assert "Deleted: sha256:" in p.stdout


def test_rollback_to_seed_explicitly(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("volume", "create", "v").returncode == 0
    p = cli("volume", "rollback", "v", "--to", "seed")
    assert p.returncode == 0 and p.stdout.strip() == "v: at seed", p.stderr


# -- -o FILE: a planted symlink redirects nothing -------------------------------------

def _plant(out: Path, victim: Path) -> None:
    """A hostile user's symlinks at the names the writers used: export's
    ``.NAME.partial``, and save's ``.NAME.volmerge-PID`` for the next few
    thousand pids (the CLI's pid is one of them)."""
    victim.write_text("precious\n")
    os.symlink(victim, out.with_name(f".{out.name}.partial"))
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    for pid in range(last + 1, last + 5000):
        os.symlink(victim, out.with_name(f".{out.name}.volmerge-{pid}"))


def _check(out: Path, victim: Path, first_member: str) -> None:
    assert victim.read_text() == "precious\n"
    assert not out.is_symlink()
    with tarfile.open(out) as t:
        assert first_member in t.getnames()
    leftovers = [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.")
                 and not os.path.islink(out.parent / n)]
    assert leftovers == []


def test_volume_export_ignores_planted_symlinks(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out, victim = tmp_path / "out" / "v.tar", tmp_path / "victim"
    out.parent.mkdir()
    _plant(out, victim)
    os.symlink(victim, out)  # at the target itself: replaced, not followed
    assert cli("volume", "create", "v").returncode == 0
    p = cli("volume", "export", "v", "-o", str(out))
    assert p.returncode == 0, p.stderr
    _check(out, victim, ".")


def test_image_save_ignores_planted_symlinks(cli, tmp_path: Path, fixture_image) -> None:  # type: ignore[no-untyped-def]
    out, victim = tmp_path / "out" / "img.tar", tmp_path / "victim"
    out.parent.mkdir()
    _plant(out, victim)
    os.symlink(victim, out)
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    p = cli("image", "save", IMG, "-o", str(out))
    assert p.returncode == 0, p.stderr
    _check(out, victim, "index.json")


# -- the checks as functions ---------------------------------------------------------

@pytest.mark.parametrize("good", ["web", "a", "web-1.example.com", "A1", "x" * 63,
                                  ".".join(["a" * 63] * 3) + ".b"])
def test_hostname_accepted(good: str) -> None:
    from volmerge.runtime.options import check_hostname

    assert check_hostname(good) == good


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "-a", "a-", "a..b", "web\n", "a_b", "x" * 64,
                                 ".".join(["a" * 63] * 4)])
def test_hostname_refused(bad: str) -> None:
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.options import check_hostname

    with pytest.raises(BadInput):
        check_hostname(bad)


@pytest.mark.parametrize(("given", "kept"), [
    ("db:192.0.2.1", "db:192.0.2.1"), ("db=192.0.2.1", "db:192.0.2.1"),
    ("v6:2001:db8::1", "v6:2001:db8::1"), ("v6=[2001:DB8::1]", "v6:2001:db8::1"),
    ("a.example.com:::1", "a.example.com:::1")])
def test_add_host_accepted(given: str, kept: str) -> None:
    from volmerge.runtime.options import parse_add_host

    assert parse_add_host([given]) == [kept]


@pytest.mark.parametrize("bad", ["db", "db:", ":192.0.2.1", "a b:192.0.2.1", "db:1.2.3",
                                 "db:192.0.2.1\n", "db:192.0.2.1 other", "db\n:192.0.2.1",
                                 "db:fe80::1%eth0 x", "db:host-gateway", "a_b:192.0.2.1"])
def test_add_host_refused(bad: str) -> None:
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.options import parse_add_host

    with pytest.raises(BadInput, match="--add-host"):
        parse_add_host([bad])


@pytest.mark.parametrize("good", ["0", "root", "1000:1000", "app:extra", "2147483647",
                                  "0:2147483647", "svc$", "_apt"])
def test_user_accepted(good: str) -> None:
    from volmerge.runtime.options import check_user

    assert check_user(good) == good


@pytest.mark.parametrize("bad", ["", ":", "2147483648", "0:4294967295", "99999999999", "a b",
                                 "root:", "root\n", "١٢", "-1", "a:b:c"])
def test_user_refused(bad: str) -> None:
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.options import check_user

    with pytest.raises(BadInput):
        check_user(bad)


@pytest.mark.parametrize("good", ["http://localhost:8080/", "localhost:8080/health", "127.0.0.1/x",
                                  "http://web/?q=1"])
def test_http_url_accepted(good: str) -> None:
    from volmerge.runtime.options import check_http_url

    assert check_http_url(good) == good


@pytest.mark.parametrize("bad", ["", "not a url", "https://h/", "ftp://h/", "http://h:0/",
                                 "http://h:99999/", "http:///x", "http://a b/", "http://h/\n"])
def test_http_url_refused(bad: str) -> None:
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.options import check_http_url

    with pytest.raises(BadInput):
        check_http_url(bad)


@pytest.mark.parametrize("ref,ok", [("app:1", True), ("sha256:abcd", False), ("sha512:x", False),
                                    (HEX64, False), ("my/" + HEX64, True), ("sha256x:1", True)])
def test_new_image_name(ref: str, ok: bool) -> None:
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.images import new_name

    if ok:
        assert new_name(ref).startswith(ref.split(":")[0])
    else:
        with pytest.raises(BadInput):
            new_name(ref)


def test_digest_with_a_newline_refused() -> None:
    """``$`` matches before a final newline: a hostile manifest's digest
    ``sha256:<hex>\\n`` must not pass as ``sha256:<hex>``."""
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.oci import digest_hex

    assert digest_hex("sha256:" + "a" * 64) == "a" * 64
    with pytest.raises(BadInput):
        digest_hex("sha256:" + "a" * 64 + "\n")
