"""A full disk at each step that writes (issue 20, point 1): the store on a
size-limited tmpfs made by the test, filled with a filler file until only a
few bytes are free.  Each step ends with one line naming the file system,
exit 1, the store and the live data intact, and the same command works once
the filler is deleted."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import requires_root
from tests.registry.conftest import open_registry, pki

from . import conftest as _c
from .conftest import APP, _app_image, volume_digest

cli_session = _c.cli_session
__all__ = ["open_registry", "pki"]  # the registry's fixtures, for the pull

pytestmark = requires_root

SIZE_MB = 48
UPGRADE = ("--health-timeout", "0.3", "--stop-timeout", "2")


class Disk:
    """A tmpfs of SIZE_MB for one store: ``fill(left)`` leaves ``left`` bytes
    free (a filler file outside the store root), ``free()`` deletes it."""

    def __init__(self, mnt: Path) -> None:
        self.mnt = mnt
        self.root = mnt / "r"
        self.filler = mnt / "filler"

    def available(self) -> int:
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def fill(self, left: int = 0) -> None:
        self.free()
        n = self.available() - left
        if n > 0:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, n)
            finally:
                os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    from volmerge.runtime import sys as rsys

    mnt = tmp_path / "d"
    mnt.mkdir()
    rsys.mount("tmpfs", mnt, "tmpfs", 0, f"size={SIZE_MB}m,mode=0700")
    try:
        yield Disk(mnt)
    finally:
        rsys.umount_tree(mnt)


@pytest.fixture(scope="module")
def app_images(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("imgs")
    return [_app_image(out / f"app{v}.tar", v) for v in (1, 2)]


@pytest.fixture
def disk(tmp_path: Path, own_netns) -> Iterator[Disk]:
    with small_disk(tmp_path) as d:
        yield d


@pytest.fixture
def vm(disk: Disk):
    with cli_session(disk.root) as run:
        try:
            yield run
        finally:
            disk.free()  # the clean-up removes containers: it must not meet a full disk


def no_space(p, disk: Disk) -> None:
    """Exit 1 and one line naming the store's file system."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("volmerge: error: no space left on "), p.stderr
    assert f"{disk.mnt} (tmpfs, " in lines[-1] and "Traceback" not in p.stderr, p.stderr
    assert sum(ln.startswith("volmerge: error: ") for ln in lines) == 1, p.stderr


def leftovers(disk: Disk) -> list[str]:
    """Work in progress left in the store (its tmp/ is swept on every open)."""
    return sorted(os.listdir(disk.root / "tmp"))


@pytest.fixture
def app(disk: Disk, vm, app_images):
    """Both app images loaded; container ``a`` (v1) running with volume ``v``
    holding some data; the journal's table made (by ``recover``)."""
    for img in app_images:
        vm("image", "load", str(img), check=True)
    vm("run", "-d", "--name", "a", "-v", "v:/data", APP[1], check=True)
    vm("exec", "a", "sh", "-c", "head -c 300000 /dev/urandom > /data/blob && "
       "sed -i 's/\"a\": 1/\"a\": 7/' /data/settings.json", check=True)
    vm("recover", check=True)
    return vm


def test_image_load(disk: Disk, vm, app_images) -> None:
    vm("image", "load", str(app_images[0]), check=True)  # the store exists
    disk.fill(100_000)
    p = vm("image", "load", str(app_images[1]))
    no_space(p, disk)
    assert f"during load of {app_images[1].name}: needed ~" in p.stderr, p.stderr
    assert vm("image", "inspect", APP[2]).returncode != 0
    vm("image", "inspect", APP[1], check=True)
    assert leftovers(disk) == []
    disk.free()
    vm("image", "load", str(app_images[1]), check=True)
    vm("run", "--rm", APP[2], "cat", "/data/added.txt", check=True)


def test_first_command_on_a_full_disk(disk: Disk, vm, app_images) -> None:
    """Even the state database's creation: one line, not an SQLite traceback."""
    disk.root.mkdir()
    disk.fill(0)
    no_space(vm("image", "load", str(app_images[0])), disk)
    disk.free()
    vm("image", "load", str(app_images[0]), check=True)


def test_volume_snapshot(disk: Disk, app) -> None:
    vm = app
    vm("stop", "a", check=True)
    before = volume_digest(disk.root, "v")
    disk.fill(0)
    p = vm("volume", "snapshot", "v")
    disk.free()
    if p.returncode != 0:
        no_space(p, disk)
    assert volume_digest(disk.root, "v") == before
    vm("volume", "snapshot", "v", check=True)
    assert volume_digest(disk.root, "v") == before


def test_upgrade_refused_before_stopping(disk: Disk, app) -> None:
    """The estimate: exit 2 before the service stops; the preview shows it."""
    vm = app
    before = volume_digest(disk.root, "v")
    pid = vm("inspect", "a", check=True).stdout
    disk.fill(50_000)
    p = vm("upgrade", "a", "--to", APP[2], *UPGRADE)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("volmerge: error: not enough space to upgrade a: ~1.") and \
        f"needed on {disk.mnt} (tmpfs), " in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert vm("inspect", "a", check=True).stdout == pid  # never stopped
    space = json.loads(vm("upgrade", "a", "--to", APP[2], "--dry-run", "--json",
                          check=True).stdout)["plan"]["space"]
    assert space["enough"] is False and space["needed"] > 1 << 20 > space["free"]
    assert space["filesystem"] == str(disk.mnt) and space["type"] == "tmpfs"
    text = vm("upgrade", "a", "--to", APP[2], "--dry-run", check=True).stdout
    assert "Space: ~1." in text and "not enough" in text
    disk.free()
    assert volume_digest(disk.root, "v") == before
    text = vm("upgrade", "a", "--to", APP[2], "--dry-run", check=True).stdout
    assert "Space: ~1." in text and "not enough" not in text
    vm("upgrade", "a", "--to", APP[2], *UPGRADE, check=True)


GREEDY = {1: "localhost/volmerge-test/greedy:1", 2: "localhost/volmerge-test/greedy:2"}


def _greedy_image(out: Path, version: int, junk: int, extra: dict | None = None) -> Path:
    """A service that writes ``junk`` bytes into /data as it stops; version 2
    brings a 2 MB file the merge must write into the new upper layer."""
    from volmerge.demoimages.recipes import busybox_entries
    from volmerge.fixtures import Dir, build_image

    script = (f"trap 'head -c {junk} /dev/zero > /data/junk; exit 0' TERM; "
              "while :; do sleep 0.05; done")
    data: dict = {"data": Dir(0o755), "data/settings.json": '{\n  "a": 1,\n  "b": 2\n}\n'}
    if version == 2 and extra is None:
        data["data/big.bin"] = "x" * 2_000_000
    data.update(extra or {})
    return build_image(out, [busybox_entries(), data],
                       {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", script],
                        "Volumes": {"/data": {}}}, GREEDY[version])


def _greedy_service(vm, tmp_path: Path, junk: int) -> None:
    for v in (1, 2):
        vm("image", "load", str(_greedy_image(tmp_path / f"g{v}.tar", v, junk)), check=True)
    vm("run", "-d", "--name", "a", "-v", "v:/data", GREEDY[1], check=True)
    vm("exec", "a", "sh", "-c", "sed -i 's/\"a\": 1/\"a\": 7/' /data/settings.json", check=True)
    vm("recover", check=True)  # the journal's table exists


def _rolled_back(disk: Disk, vm, before: dict[str, str]) -> None:
    """After freeing space and one command (which finishes a roll back the
    full disk cut short): the data as it was, the old service running, the
    attempt recorded as rolled back, and the same upgrade works."""
    disk.free()
    vm("recover", check=True)
    after = volume_digest(disk.root, "v")
    after.pop("junk", None)  # what the service itself wrote as it stopped
    assert after == before
    ps = vm("ps", "--json").stdout
    assert GREEDY[1] in ps and GREEDY[2] not in ps
    vm("exec", "a", "true", check=True)  # running again
    hist = vm("history", "a").stdout
    assert "rolled-back" in hist, hist
    vm("upgrade", "a", "--to", GREEDY[2], *UPGRADE, check=True)
    out = vm("exec", "a", "sh", "-c", "cat /data/settings.json; wc -c < /data/big.bin",
             check=True).stdout
    assert '"a": 7' in out and "2000000" in out


def test_upgrade_space_gone_after_the_stop(disk: Disk, vm, tmp_path: Path) -> None:
    """Space the estimate saw is gone once the service stopped (it writes
    1.5 MB as it stops): the merge or the journal after it meets the full
    disk; one line, exit 1, and once space is freed the next command has
    everything back (the journal finishes a roll back the disk cut short)."""
    _greedy_service(vm, tmp_path, junk=1_500_000)
    before = volume_digest(disk.root, "v")
    disk.fill(3_300_000)
    p = vm("upgrade", "a", "--to", GREEDY[2], *UPGRADE, env={"VOLMERGE_LOG": "info"})
    no_space(p, disk)
    assert "snapshot volume v" in p.stderr  # it got past the stop
    last = p.stderr.splitlines()[-1]
    assert "rolled back: free space" in last or \
        "the roll back is not finished: free space, and the next command" in last, last
    assert leftovers(disk) == []
    _rolled_back(disk, vm, before)


def test_volume_export_and_import(disk: Disk, app) -> None:
    vm = app
    vm("stop", "a", check=True)
    before = volume_digest(disk.root, "v")
    tar = disk.mnt / "v.tar"
    disk.fill(50_000)
    no_space(vm("volume", "export", "v", "-o", str(tar)), disk)
    assert not tar.exists() and [e for e in os.listdir(disk.mnt) if e != "filler" and e != "r"] == []
    disk.free()
    vm("volume", "export", "v", "-o", str(tar), check=True)
    disk.fill(50_000)
    p = vm("volume", "import", "w", str(tar))
    no_space(p, disk)
    assert "needed ~" in p.stderr
    assert vm("volume", "ls", "-q").stdout.split() == ["v"]
    disk.free()
    vm("volume", "import", "w", str(tar), check=True)
    assert volume_digest(disk.root, "w") == before


def test_volume_compact(disk: Disk, app) -> None:
    """Compaction moves files between layers rather than copying them: it
    works on a nearly full disk; on a completely full one it either works
    or stops with the one line, the volume as it was."""
    vm = app
    vm("stop", "a", check=True)

    def snapshots(n: int, tag: str) -> None:
        for i in range(n):  # untagged snapshots, each layer with its own data
            vm("volume", "snapshot", "v", check=True)
            vm("start", "a", check=True)
            vm("exec", "a", "sh", "-c", f"head -c 400000 /dev/urandom > /data/{tag}{i}",
               check=True)
            vm("stop", "a", check=True)
        vm("volume", "snapshot", "v", check=True)

    snapshots(2, "f")
    before = volume_digest(disk.root, "v")
    disk.fill(100_000)
    assert " frozen layers" in vm("volume", "compact", "v", check=True).stdout
    disk.free()
    assert volume_digest(disk.root, "v") == before
    snapshots(1, "g")
    before = volume_digest(disk.root, "v")
    disk.fill(0)
    p = vm("volume", "compact", "v")
    disk.free()
    if p.returncode != 0:
        no_space(p, disk)
    assert volume_digest(disk.root, "v") == before
    vm("volume", "compact", "v", check=True)
    assert volume_digest(disk.root, "v") == before


def _sqlite_db(path: Path, schema: str, rows: int) -> bytes:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.executemany("INSERT INTO notes (text) VALUES (?)", [("n" * 500,)] * rows)
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_upgrade_sqlite_replay(disk: Disk, vm, tmp_path: Path) -> None:
    """The SQLite replay of a 1.5 MB database meets the full disk (the
    estimate saw room; the service ate 1.3 MB of it as it stopped): one line,
    exit 1, the database as it was, and once space is freed the replay works."""
    schema = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT"
    v1 = _sqlite_db(tmp_path / "v1.db", schema + ");", 0)
    v2 = _sqlite_db(tmp_path / "v2.db", schema + ", tag TEXT DEFAULT '');", 0)
    live = _sqlite_db(tmp_path / "live.db", schema + ");", 3000)
    for v, extra in ((1, {"data/app.db": v1, "seed/app.db": live}), (2, {"data/app.db": v2})):
        vm("image", "load", str(_greedy_image(tmp_path / f"g{v}.tar", v, 1_300_000, extra)),
           check=True)
    vm("run", "-d", "--name", "a", "-v", "v:/data", GREEDY[1], check=True)
    vm("exec", "a", "cp", "/seed/app.db", "/data/app.db", check=True)
    vm("recover", check=True)
    before = volume_digest(disk.root, "v")
    space = json.loads(vm("upgrade", "a", "--to", GREEDY[2], "--dry-run", "--json",
                          check=True).stdout)["plan"]["space"]
    assert space["needed"] >= len(live)  # the database to replay is in the estimate
    disk.fill(space["needed"] + 100_000)
    p = vm("upgrade", "a", "--to", GREEDY[2], *UPGRADE, env={"VOLMERGE_LOG": "info"})
    no_space(p, disk)
    # the replay is staged before the stop (it may pass); the disk the service
    # filled as it stopped then fails the replay or a step after it
    assert "snapshot volume v" in p.stderr
    disk.free()
    vm("recover", check=True)
    after = volume_digest(disk.root, "v")
    after.pop("junk", None)
    assert after == before
    vm("exec", "a", "true", check=True)  # the old service runs again
    vm("upgrade", "a", "--to", GREEDY[2], *UPGRADE, check=True)
    import sqlite3

    from volmerge.runtime.store import Store
    from volmerge.volumes import VolumeManager
    st = Store(disk.root)
    try:
        with VolumeManager(st).view("v") as d:
            conn = sqlite3.connect(f"file:{d / 'app.db'}?mode=ro", uri=True)
            assert conn.execute("SELECT count(*), min(tag) FROM notes").fetchone() == (3000, "")
            conn.close()
    finally:
        st.close()


@pytest.mark.parametrize("step", ["upgrade.after-stage-merge", "upgrade.after-create",
                                  "upgrade.after-snapshot", "upgrade.after-finish-merge"])
def test_upgrade_disk_full_at_a_step(disk: Disk, vm, tmp_path: Path, step: str) -> None:
    """The file system fills up right after ``step`` (volumes/faults.py
    fills it there): the journal's next write, or the step after, meets
    ENOSPC.  One line naming the file system and what the upgrade needed,
    exit 1; once space is freed the next command finishes any roll back the
    full disk cut short, and the same upgrade works."""
    _greedy_service(vm, tmp_path, junk=0)
    before = volume_digest(disk.root, "v")
    p = vm("upgrade", "a", "--to", GREEDY[2], *UPGRADE,
           env={"VOLMERGE_FAULT": step, "VOLMERGE_FAULT_FILL": str(disk.filler)})
    no_space(p, disk)
    assert "needed ~" in p.stderr.splitlines()[-1], p.stderr
    _rolled_back(disk, vm, before)


BIG = "localhost/volmerge-test/big:1"


@pytest.fixture(scope="module")
def pushed(open_registry, tmp_path_factory) -> str:
    """An image with a 6 MB layer that does not compress, pushed to a real
    registry (distribution on loopback) from a store of its own."""
    from volmerge.demoimages.recipes import busybox_entries
    from volmerge.fixtures import build_image
    from volmerge.runtime import sys as rsys

    out = tmp_path_factory.mktemp("big")
    tar = build_image(out / "big.tar", [busybox_entries(), {"blob": os.urandom(6_000_000)}],
                      {"Env": ["PATH=/bin"], "Cmd": ["/bin/true"]}, BIG, compress="gzip")
    ref = open_registry.ref("faults/big:1")
    try:
        with cli_session(out / "root") as seed:
            seed("image", "load", str(tar), check=True)
            seed("push", "-q", BIG, ref, env={"VOLMERGE_CERTS_D": str(open_registry.certs_d)},
                 check=True)
    finally:
        rsys.umount_tree(out / "root")
    return ref


def test_pull(open_registry, pushed: str, app_images, tmp_path: Path) -> None:
    """(In the session's network namespace: the registry's.)  A pull that finds no room for its 6 MB layer: one line, exit 1, no
    image and no layer of it in the store, nothing left in the store's tmp/;
    once space is freed the same pull works (what was downloaded before the
    disk filled is taken up again or fetched anew) and the image runs."""
    env = {"VOLMERGE_CERTS_D": str(open_registry.certs_d),
           "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    with small_disk(tmp_path) as disk, cli_session(disk.root) as vm:
        try:
            _pull(disk, vm, env, pushed, app_images)
        finally:
            disk.free()


def _pull(disk: Disk, vm, env: dict[str, str], pushed: str, app_images: list[Path]) -> None:
    vm("image", "load", str(app_images[0]), check=True)  # the store exists
    layers = sorted(os.listdir(disk.root / "layers"))
    disk.fill(2_000_000)
    p = vm("pull", pushed, env=env)
    no_space(p, disk)
    assert f"during pull of {pushed}: needed ~1" in p.stderr, p.stderr  # ~12MB: blob and layer
    assert vm("image", "inspect", pushed).returncode != 0
    assert sorted(os.listdir(disk.root / "layers")) == layers
    assert leftovers(disk) == []
    disk.free()
    vm("pull", "-q", pushed, env=env, check=True)
    assert not os.listdir(disk.root / "registry" / "partial")  # taken up again, or swept
    assert vm("run", "--rm", "--network", "none", pushed, "sh", "-c", "wc -c < /blob", check=True).stdout.strip() \
        == "6000000"


@pytest.fixture
def pg_on_small_disk(tmp_path: Path):
    """A PostgreSQL 15 server (this host's binaries, a unix socket only)
    whose data directory is on a 96 MB tmpfs of its own."""
    from tests.pg import pg15, require_pg15
    from volmerge.runtime import sys as rsys

    require_pg15()
    mnt = tmp_path / "pgdisk"
    mnt.mkdir()
    rsys.mount("tmpfs", mnt, "tmpfs", 0, "size=96m,mode=0755")
    disk = Disk(mnt)
    try:
        with pg15(mnt / "data", tmp_path / "sock") as server:
            try:
                yield server, disk
            finally:
                disk.free()  # before the stop: a server on a full disk may not stop cleanly
    finally:
        rsys.umount_tree(mnt)


@pytest.mark.parametrize("left", [1_000_000, 9_500_000], ids=["create-database", "copy"])
def test_sql_replay_into_a_full_postgresql(pg_on_small_disk, tmp_path: Path, left: int) -> None:
    """``sql replay`` of a 4 MB SQLite database into a PostgreSQL whose disk
    fills (at CREATE DATABASE, or in the rows' COPY): one line naming the
    server, its data directory and about what the replay needed, exit 1, no
    database left behind; once space is freed the replay works."""
    import psycopg

    server, disk = pg_on_small_disk
    schema = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT"
    _sqlite_db(tmp_path / "new.db", schema + ", tag TEXT DEFAULT '');", 0)
    _sqlite_db(tmp_path / "live.db", schema + ");", 8000)
    dst = server.url("notes")
    disk.fill(left)
    with cli_session(tmp_path / "root") as vm:
        p = vm("sql", "replay", str(tmp_path / "live.db"), "--schema", str(tmp_path / "new.db"),
               "-o", dst)
        assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
        assert p.stderr.startswith(f"volmerge: error: no space left on the PostgreSQL server "
                                   f"postgresql:///notes?host={server.sockdir}"), p.stderr
        assert f"data directory {server.datadir}: " in p.stderr and "needed ~4." in p.stderr
        with psycopg.connect(server.url("postgres")) as c:
            have = c.execute("SELECT count(*) FROM pg_database WHERE datname = 'notes'"
                             ).fetchone() == (1,)
        if have:  # DROP DATABASE needs WAL space too: left invalid (PostgreSQL >= 15.4)
            assert "could not drop the database notes it created" in p.stderr, p.stderr
        else:
            assert p.stderr.rstrip().endswith("rolled back: free space there and run the "
                                              "command again"), p.stderr
        disk.free()
        vm("sql", "replay", str(tmp_path / "live.db"), "--schema", str(tmp_path / "new.db"),
           "-o", dst, check=True)
    with psycopg.connect(dst) as c:
        assert c.execute("SELECT count(*), min(tag) FROM notes").fetchone() == (8000, "")


@pytest.fixture
def pg_store(own_netns, fixture_image):
    """A store on a 512 MB tmpfs with the PostgreSQL 15 and 16 fixture images
    and container ``pg`` (15) serving a database ``shop``."""
    import shutil
    import tempfile

    from volmerge.runtime import sys as rsys

    from .test_pg_upgrade import CHECK, PG15, PG16, start_pg15

    # short: PostgreSQL's unix sockets live below the store's tmp/ (108 bytes at most)
    mnt = Path(tempfile.mkdtemp(prefix="vmdf-", dir="/run"))
    rsys.mount("tmpfs", mnt, "tmpfs", 0, "size=512m,mode=0700")
    disk = Disk(mnt)
    try:
        with cli_session(disk.root) as vm:
            try:
                for kind in ("postgres15", "postgres16"):
                    vm("image", "load", str(fixture_image(kind)), check=True, timeout=300)
                yield disk, vm, start_pg15(vm), (CHECK, PG15, PG16)
            finally:
                disk.free()
    finally:
        rsys.umount_tree(mnt)
        shutil.rmtree(mnt, ignore_errors=True)


def test_pg_major_upgrade(pg_store) -> None:
    """PostgreSQL 15 -> 16: the estimate counts the major upgrade's own work
    (a copy of the data directory and a second one); the file system fills
    up after the stop and the snapshot (8 MB left: the journal fits, the
    major upgrade does not): one line naming the file system and the amount,
    exit 1, 15 serving the same rows again; once space is freed the upgrade
    works."""
    from .test_pg_upgrade import psql

    disk, vm, before, (check, pg15, pg16) = pg_store
    space = json.loads(vm("upgrade", "pg", "--to", pg16, "--dry-run", "--json", check=True,
                          timeout=300).stdout)["plan"]["space"]
    data = int(vm("exec", "pg", "du", "-sb", "/var/lib/postgresql/data", check=True)
               .stdout.split()[0])
    assert space["needed"] > 1.8 * data > 0, (space, data)  # was ~1 MB before it counted them
    p = vm("upgrade", "pg", "--to", pg16, "--health-timeout", "60", timeout=300,
           env={"VOLMERGE_FAULT": "upgrade.after-snapshot", "VOLMERGE_FAULT_FILL": str(disk.filler),
                "VOLMERGE_FAULT_FILL_LEAVE": "8000000", "VOLMERGE_LOG": "info"})
    disk.free()
    no_space(p, disk)
    # the major upgrade (at the switch: a data directory is not staged) did not finish
    assert "✓ finish the merge" not in p.stderr, p.stderr
    assert "needed ~" in p.stderr.splitlines()[-1], p.stderr
    vm("recover", check=True)
    vm("wait", "--healthy", "pg", "--timeout", "30", check=True)
    assert psql(vm, "SHOW server_version_num").startswith("15")
    assert _rows(psql(vm, check, "shop")) == _rows(before)
    vm("upgrade", "pg", "--to", pg16, "--health-timeout", "60", check=True, timeout=300)
    assert psql(vm, "SHOW server_version_num").startswith("16")
    assert _rows(psql(vm, check, "shop")) == _rows(before)


def _rows(check: str) -> list[str]:
    """The CHECK of test_pg_upgrade less its sequences' values: a server that
    met the full disk as it stopped recovers at its next start, and a
    sequence then continues past the values it had logged ahead (PostgreSQL's
    rule; no row is lost)."""
    f = check.split("|")
    return f[:4] + f[6:]
