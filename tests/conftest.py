"""Test-wide set-up: a private mount namespace and a leak guard.

The whole session runs in its own mount namespace (everything mounted by a
test, a CLI subprocess or a container supervisor stays invisible to the host
and dies with the session).  After every test the guard checks that the test
left no mount, process, network interface, nft table or temporary file behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import processes_whose

ROOT_DIR = Path(__file__).resolve().parent.parent
os.environ["PATH"] = "/usr/lib/postgresql/15/bin:" + os.environ.get("PATH", "")

# Under pytest-xdist (`-n N`) every worker is a session of its own: its own
# tag, cgroup parent, namespaces and scratch space (below), so one worker's
# leak guard never counts another's processes, mounts or cgroups.  A pytest
# that a test starts inside a worker inherits the worker's tag, as it does
# without xdist.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and os.environ.get("VOLMERGE_TEST_WORKER") != _WORKER:
    os.environ["VOLMERGE_TEST_WORKER"] = _WORKER
    os.environ["VOLMERGE_TEST_TAG"] = uuid.uuid4().hex
    os.environ.pop("VOLMERGE_CGROUP_PARENT", None)

# A tag that every process started by the suite inherits: the guard finds
# stray processes by it.
TEST_TAG = os.environ.setdefault("VOLMERGE_TEST_TAG", uuid.uuid4().hex)
# Container cgroups of this session live under a parent of their own.
os.environ.setdefault("VOLMERGE_CGROUP_PARENT", f"volmerge-test-{TEST_TAG[:12]}")


def _enter_private_mount_ns() -> None:
    if os.environ.get("VOLMERGE_TEST_MNTNS") == str(os.getpid()):
        return
    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNS)
    rsys.make_private("/")
    os.environ["VOLMERGE_TEST_MNTNS"] = str(os.getpid())


def _enter_private_net_ns() -> None:
    """The whole session gets a network namespace of its own (loopback up):
    bridges, veths, nft tables and published ports made by any test, CLI run
    or container stay inside it; the host's network is never touched."""
    if os.environ.get("VOLMERGE_TEST_NETNS") == str(os.getpid()):
        return
    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNET)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["VOLMERGE_TEST_NETNS"] = str(os.getpid())


if os.geteuid() == 0:
    _enter_private_mount_ns()
    _enter_private_net_ns()

# The session's own scratch space: removed at the end, so pytest's kept
# tmp_path directories never accumulate.
# (An xdist worker's beside the main process's, not inside it: socket paths
# below a test's tmp_path stay as short as without xdist.)
_TMP_BASE = os.environ.setdefault("VOLMERGE_TEST_TMPBASE", tempfile.gettempdir())
SESSION_TMP = Path(tempfile.mkdtemp(prefix="volmerge-tests-", dir=_TMP_BASE if _WORKER else None))
# As root, in a tmpfs of its own (in the session's mount namespace, so it
# vanishes with it): the tests make and delete many small files and
# directories, sync SQLite databases and unpack images, and on the disk's
# file system each of those is a journal write (mkdir ~0.3 ms, rmdir ~0.7,
# fsync ~3.5 on CI's machine; tmpfs: microseconds).  What the tests assert
# does not depend on it: overlay, runc, PostgreSQL and podman run on it as
# on a disk, and no test simulates a power loss.  Each test's tmp_path is
# removed after it (leak_guard), so the memory it holds stays small.
# VOLMERGE_TEST_TMPFS=0: on the disk, as before.
TMPFS = os.geteuid() == 0 and os.environ.get("VOLMERGE_TEST_TMPFS", "1") != "0"
if TMPFS:
    from volmerge.runtime import sys as _rsys

    _rsys.mount("volmerge-tests", SESSION_TMP, "tmpfs", 0, "mode=0700")
os.environ["TMPDIR"] = str(SESSION_TMP / "tmp")
(SESSION_TMP / "tmp").mkdir()
tempfile.tempdir = None


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.basetemp or _WORKER:
        # (a worker's own, not the main process's plus "/popen-gwN": paths
        # below tmp_path stay as short as without xdist, unix sockets fit)
        config.option.basetemp = str(SESSION_TMP / "pytest")
    if os.geteuid() == 0 and not _WORKER and getattr(config.option, "numprocesses", None):
        # The system user PostgreSQL runs as is made on first use
        # (upgrade.pgdata): made once here, before the parallel sessions
        # start, or two of them race to useradd it on a fresh machine.
        from volmerge.upgrade.pgdata import host_tools

        host_tools("/usr/lib/postgresql/15/bin")


def pytest_unconfigure(config: pytest.Config) -> None:
    from volmerge.runtime import sys as rsys

    rsys.umount_tree(SESSION_TMP)
    shutil.rmtree(SESSION_TMP, ignore_errors=True)
    from volmerge.runtime import cgroups

    cgroups.remove_parent()


# Property tests draw the same examples on every run (CI is deterministic:
# a failure is a regression, never a lucky draw); set
# VOLMERGE_HYPOTHESIS=explore locally to search new examples.
from hypothesis import HealthCheck as _HC  # noqa: E402
from hypothesis import settings as _hsettings  # noqa: E402

# No per-example deadline and no too-slow health check: a loaded CI machine
# must not turn a correct property into a failure.
_hsettings.register_profile("ci", derandomize=True, database=None, deadline=None,
                            suppress_health_check=[_HC.too_slow])
_hsettings.register_profile("explore")
_hsettings.load_profile("explore" if os.environ.get("VOLMERGE_HYPOTHESIS") == "explore" else "ci")

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _tagged_processes() -> set[int]:
    return processes_whose("environ", f"VOLMERGE_TEST_TAG={TEST_TAG}".encode())


def _interfaces() -> set[str]:
    return {name for _i, name in socket.if_nameindex()}


_NFPROTO = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


def _nft_tables() -> set[str]:
    """The nft tables of the session's network namespace ("FAMILY NAME"),
    read over netlink in-process (~1 ms; nft(8) takes ~5).  None where the
    kernel has no nf_tables: then no test can leave one."""
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.nftables.main import NFTables

    try:
        with NFTables(nfgen_family=0) as nft:
            return {f"{_NFPROTO.get(m['nfgen_family'], m['nfgen_family'])} "
                    f"{m.get_attr('NFTA_TABLE_NAME')}" for m in nft.get_tables()}
    except (OSError, NetlinkError):
        return set()


def _tmp_entries() -> set[str]:
    # Only the session's own TMPDIR (every test and every subprocess it starts
    # inherits it): /tmp is shared with whatever else runs on the machine.
    out = set()
    for d in (str(SESSION_TMP / "tmp"),):
        try:
            out |= {f"{d}/{e}" for e in os.listdir(d)}
        except OSError:
            pass
    return out


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest):
    before = (_mounts(), _tagged_processes(), _interfaces(), _tmp_entries(), _nft_tables())
    yield
    deadline = time.monotonic() + 5
    while True:
        after = (_mounts(), _tagged_processes(), _interfaces(), _tmp_entries(), _nft_tables())
        leaked = {
            "mounts": sorted(after[0] - before[0]),
            "processes": sorted(after[1] - before[1]),
            "interfaces": sorted(after[2] - before[2]),
            "temp files": sorted(after[3] - before[3]),
            "nft tables": sorted(after[4] - before[4]),
        }
        leaked = {k: v for k, v in leaked.items() if v}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if leaked:
        # Clean up so one leak does not cascade into every later test.
        from volmerge.runtime import sys as rsys

        for mp in leaked.get("mounts", []):
            try:
                rsys.umount(mp, rsys.MNT_DETACH)
            except OSError:
                pass
        for pid in leaked.get("processes", []):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        for p in leaked.get("temp files", []):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else Path(p).unlink(missing_ok=True)
        for table in leaked.get("nft tables", []):
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
        pytest.fail(f"test leaked: {leaked}")
    if TMPFS:
        _remove_tmp_path(request)


def _remove_tmp_path(request: pytest.FixtureRequest) -> None:
    """Free the test's tmp_path (memory, on the session's tmpfs) once it is
    known to hold no mount: nothing after the test reads it (the session
    removes all of it at the end anyway)."""
    tmp = (request.node.funcargs or {}).get("tmp_path")
    if not isinstance(tmp, Path) or not tmp.is_dir():
        return
    inside = str(tmp) + "/"
    if any(m == str(tmp) or m.startswith(inside) for m in _mounts()):
        return
    from volmerge.runtime import fsutil

    fsutil.rmtree(tmp)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh store root for one test, torn down with all its mounts."""
    r = tmp_path / "root"
    yield r
    from volmerge.runtime import sys as rsys

    _remove_networks(r)
    rsys.umount_tree(r)


def _remove_networks(r: Path) -> None:
    """Bridges outlive containers (like docker0): a test's root takes its
    networks with it."""
    if not (r / "state.db").exists():
        return
    import contextlib
    import sqlite3

    # (sqlite3's context manager ends a transaction, it does not close)
    with contextlib.closing(sqlite3.connect(r / "state.db")) as db:
        has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'networks'").fetchone()
    if not has:
        return
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store

    st = Store(r)
    try:
        nm = NetworkManager(st)
        nm.reconcile(alive=lambda cid: False)
        for n in nm.list():
            nm.remove(n.name)
    finally:
        st.close()


@pytest.fixture
def store(root: Path):
    """The Store at ``root``, closed after the test."""
    from volmerge.runtime.store import Store

    s = Store(root)
    yield s
    s.close()


@pytest.fixture
def cli(root: Path):
    """Run the real ``volmerge`` CLI in a subprocess against the test's root."""

    def run(*args: str, input: str | None = None, check: bool | None = None,
            timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, VOLMERGE_ROOT=str(root), **(env or {}))
        proc = subprocess.run(
            [sys.executable, "-m", "volmerge", *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=full_env,
        )
        if check or (check is None and False):
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


@dataclass(frozen=True)
class LocalUser:
    """A real unprivileged local user (see the ``unprivileged_user`` fixture)."""

    name: str
    uid: int
    gid: int

    def run(self, *argv: str | os.PathLike[str], **kw: object) -> subprocess.CompletedProcess:
        """Run ``argv`` as this user (no supplementary groups, no capabilities).

        Through ``/bin/sh``: setpriv itself still holds root's capabilities
        while it execs its argument, so a path only root can reach would run."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
               "--", "/bin/sh", "-c", 'exec "$@"', "sh", *map(str, argv)]
        return subprocess.run(  # type: ignore[call-overload]
            cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def unprivileged_user():
    """A real local user made for the test (useradd: unique name, own group,
    no home, nologin shell), removed after it (userdel).  Commands run as it
    with ``user.run(...)``: the attacker of the store's security tests."""
    name = f"vmt{uuid.uuid4().hex[:12]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True, timeout=60)
    try:
        import pwd

        pw = pwd.getpwnam(name)
        yield LocalUser(name, pw.pw_uid, pw.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


@pytest.fixture
def public_dir():
    """A fresh root-owned 0755 directory in /tmp that any local user can reach
    (the session's own temporary directories are 0700: a test that checks what
    another user cannot reach must put the store here, or it proves nothing)."""
    d = Path(tempfile.mkdtemp(prefix="volmerge-public-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    from volmerge.runtime import sys as rsys

    rsys.umount_tree(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def fixture_image():
    """``fixture_image("busybox")`` -> Path of a cached oci-archive built from
    the host's own files by fixtures/ (kinds: busybox, python, postgres15, ...)."""
    from volmerge.fixtures.images import image_archive

    return image_archive


@pytest.fixture
def own_netns():
    """Run the test (and every subprocess it starts) in a fresh network
    namespace with only loopback up: bridges, addresses and published ports
    the test makes never touch the host's network."""
    from volmerge.runtime import sys as rsys

    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        rsys.unshare(rsys.CLONE_NEWNET)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        rsys.setns(saved, rsys.CLONE_NEWNET)
        os.close(saved)


@pytest.fixture
def deep_paths():
    """Where a test made deep trees: removed with fsutil.rmtree even when the
    test fails, since the session's clean-up (shutil.rmtree) would recurse."""
    from volmerge.runtime import fsutil
    from volmerge.runtime import sys as rsys

    made: list[Path] = []
    yield made
    for p in made:
        rsys.umount_tree(p)
        fsutil.rmtree(p)
