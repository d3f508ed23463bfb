"""The container engine: state, lifecycle, and the truth about processes.

A container is a row in the ``containers`` table (component "containers")
plus ``<root>/containers/<id>/``::

    upper/ work/        the container layer (survives stop/start; rm removes it)
    bundle/config.json  the OCI runtime spec, rewritten at every start
    bundle/rootfs       the overlay mount point (mounted while it runs)
    init.pid            host pid of the container's first process
    log                 json-lines output of a detached container
    hosts               /etc/hosts when no network manager provides one
    hostname            /etc/hostname
    resolv.conf         /etc/resolv.conf (the host's, loopback resolvers dropped)

A detached container is owned by a supervisor process (runtime.supervisor);
a foreground one by the CLI process that runs it.  Either way the owner's pid
and start time are recorded, so any later command can tell a live owner from
a dead one and reconcile (``ps`` always tells the truth).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import fsutil
from . import rootfs as rootfs_mod
from .errors import BadInput, Conflict, NotDone, NotFound
from .options import Mount, RunOptions, check_name
from .spec import ResolvedMount

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

MIGRATIONS = [
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image_id TEXT NOT NULL,
        image_ref TEXT NOT NULL,
        state TEXT NOT NULL,
        runtime TEXT NOT NULL,
        options TEXT NOT NULL,
        image_config TEXT NOT NULL,
        lowers TEXT NOT NULL,
        mounts TEXT NOT NULL DEFAULT '[]',
        pid INTEGER,
        owner_pid INTEGER,
        owner_start TEXT,
        exit_code INTEGER,
        health TEXT,
        health_detail TEXT,
        restart_count INTEGER NOT NULL DEFAULT 0,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX containers_image ON containers(image_id);
    """,
]

LIVE_STATES = ("running", "paused", "restarting")
SIGNALS = {s.name[3:]: int(s) for s in signal.Signals if s.name.startswith("SIG") and "_" not in s.name}


@dataclass
class Container:
    """A row of the ``containers`` table, decoded, and its directory."""

    id: str
    name: str
    image_id: str
    image_ref: str
    state: str
    runtime: str
    options: RunOptions
    image_config: dict[str, Any]
    lowers: list[str]
    mounts: list[dict[str, Any]]
    pid: int | None
    owner_pid: int | None
    owner_start: str | None
    exit_code: int | None
    health: str | None
    health_detail: dict[str, Any] | None
    restart_count: int
    stop_requested: bool
    error: str | None
    created: float
    started_at: float | None
    finished_at: float | None
    dir: Path = field(default=Path("/"))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def rootfs(self) -> Path:
        return self.dir / "bundle" / "rootfs"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "image": self.image_ref, "image_id": self.image_id,
            "state": self.state, "runtime": self.runtime, "pid": self.pid,
            "exit_code": self.exit_code, "health": self.health,
            "health_detail": self.health_detail, "restart_count": self.restart_count,
            "error": self.error, "created": self.created, "started_at": self.started_at,
            "finished_at": self.finished_at, "rootfs": str(self.rootfs), "upper": str(self.upper),
            "bundle": str(self.bundle), "log": str(self.log_path), "mounts": self.mounts,
            "options": self.options.to_json(),
        }


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a
    live process from a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        if rest[0] == b"Z":
            return None
        return rest[19].decode()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


_ADJ = ["brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nifty", "quiet", "sharp",
        "tender", "vivid", "witty", "zesty", "bold", "happy"]
_NOUN = ["otter", "heron", "lynx", "panda", "raven", "tapir", "yak", "koala", "bison", "crane",
         "gecko", "ibex", "lemur", "marten", "newt", "quokka"]


class Engine:
    """Containers on overlay layers, run by an executor (runc or builtin).

    ``volumes``: a runtime.volumes_api.VolumeProvider (default: plain dirs);
    ``network``: a NetworkManager or None; ``runtime``: the default executor
    for new containers ("runc" | "builtin" | None = runc when installed);
    ``factory``: "module:function" building this same engine from a store,
    so that supervisors use the same volume and network providers.
    """

    def __init__(self, store: Any, volumes: Any = None, network: Any = None,
                 runtime: str | None = None, *, factory: str | None = None) -> None:
        self.store = store
        if volumes is None:
            from .volumes_api import PlainDirVolumes

            volumes = PlainDirVolumes(store.root)
        self.volumes = volumes
        self.network = network
        self.default_runtime = runtime
        self.factory = factory
        store.ensure_schema("containers", MIGRATIONS)
        register_image_check()

    # -- rows -------------------------------------------------------------------
    def _row_to_container(self, row: Any) -> Container:
        return Container(
            id=row["id"], name=row["name"], image_id=row["image_id"], image_ref=row["image_ref"],
            state=row["state"], runtime=row["runtime"],
            options=RunOptions.from_json(json.loads(row["options"])),
            image_config=json.loads(row["image_config"]), lowers=json.loads(row["lowers"]),
            mounts=json.loads(row["mounts"]), pid=row["pid"], owner_pid=row["owner_pid"],
            owner_start=row["owner_start"], exit_code=row["exit_code"], health=row["health"],
            health_detail=json.loads(row["health_detail"]) if row["health_detail"] else None,
            restart_count=row["restart_count"], stop_requested=bool(row["stop_requested"]),
            error=row["error"], created=row["created"], started_at=row["started_at"],
            finished_at=row["finished_at"], dir=self.store.path("containers", row["id"]),
        )

    def _lookup(self, ref: str) -> Container:
        db = self.store.db
        row = db.execute("SELECT * FROM containers WHERE name = ? OR id = ?", (ref, ref)).fetchone()
        if row is None and ref and all(ch in "0123456789abcdef" for ch in ref):
            rows = db.execute("SELECT * FROM containers WHERE id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise BadInput(f"container id prefix {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no such container: {ref}")
        return self._row_to_container(row)

    def _update(self, cid: str, **cols: Any) -> None:
        """Change a container's run state (running, exited, pid, health, mounts,
        stop request...): not durable (Store.transaction), so a ``run`` pays
        no fsync for each of them.  After a power loss the last of them may
        be missing; nothing of that run is left then (no process, no mount,
        no network), and the reconciliation of a state that still says
        "running" (its owner is dead) records the exit, as after any crash.
        A container's existence is durable: create, rename and remove."""
        if not cols:
            return
        for k in ("health_detail", "mounts"):
            if k in cols and not isinstance(cols[k], (str, type(None))):
                cols[k] = json.dumps(cols[k])
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self.store.transaction(durable=False) as db:
            db.execute(f"UPDATE containers SET {sets} WHERE id = ?", (*cols.values(), cid))

    def get(self, ref: str) -> Container:
        """The container by name, id or unique id prefix, reconciled."""
        return self._reconcile_one(self._lookup(ref))

    def list(self, all: bool = False) -> list[Container]:
        rows = self.store.db.execute("SELECT * FROM containers ORDER BY created DESC").fetchall()
        out = [self._reconcile_one(self._row_to_container(r)) for r in rows]
        return out if all else [c for c in out if c.state in LIVE_STATES]

    def users_of_image(self, image_id: str) -> list[str]:
        rows = self.store.db.execute("SELECT name FROM containers WHERE image_id = ?",
                                     (image_id,)).fetchall()
        return [r[0] for r in rows]

    # -- create -------------------------------------------------------------------
    def create(self, opts: RunOptions) -> Container:
        """Record a new container (nothing runs yet).  Name clash: Conflict."""
        from . import executors

        runtime = opts.runtime or self.default_runtime or executors.default_name()
        if runtime not in executors.NAMES:
            raise BadInput(f"unknown runtime {runtime!r}: expected one of {', '.join(executors.NAMES)}")
        if opts.rm and opts.restart.name != "no":
            raise BadInput("--rm and --restart cannot be combined")
        if opts.ports and (self.network is None or opts.network in ("none", "host")):
            raise BadInput("publishing ports needs a container network (--network NAME)")
        if opts.network not in (None, "none", "host") and self.network is None:
            raise BadInput(f"network {opts.network!r}: no network manager is configured")
        seen: set[str] = set()
        for m in opts.mounts:
            t = m.target.rstrip("/")
            if t in seen:
                raise BadInput(f"duplicate mount point {m.target}")
            seen.add(t)
        image = rootfs_mod.load_image(self.store, opts.image)
        lowers = [str(x) for x in image.lower_dirs()]
        cid = os.urandom(32).hex()
        name = check_name(opts.name) if opts.name else self._generate_name()
        cdir = self.store.path("containers", cid)
        with self.store.lock("containers"), self.store.transaction() as db:
            if db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"container name {name!r} is already in use")
            cdir.mkdir(mode=0o700)
            db.execute(
                "INSERT INTO containers (id, name, image_id, image_ref, state, runtime, options,"
                " image_config, lowers, created) VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?)",
                (cid, name, str(image.id), opts.image, runtime,
                 json.dumps(RunOptions.from_json({**opts.to_json(), "name": name}).to_json()),
                 json.dumps(image.config or {}), json.dumps(lowers), time.time()),
            )
        return self._lookup(cid)

    def _generate_name(self) -> str:
        for _ in range(50):
            n = f"{_pick(_ADJ)}_{_pick(_NOUN)}"
            if not self.store.db.execute("SELECT 1 FROM containers WHERE name = ?", (n,)).fetchone():
                return n
        return "c_" + os.urandom(5).hex()

    # -- preparing and tearing down a run -----------------------------------------
    def executor_for(self, c: Container) -> Any:
        from . import executors

        return executors.get(c.runtime, self.store.root)

    def prepare(self, c: Container) -> None:
        """Mount the root, attach volumes and network, write config.json.
        On any failure everything done here is undone."""
        from . import spec as spec_mod
        from .cgroups import cgroups_path

        mounts: list[Any] = []
        try:
            rootfs = rootfs_mod.mount_rootfs(c.dir, c.lowers, volatile=c.options.rm)
            hostname = c.options.hostname or c.short_id
            proc = spec_mod.resolve_process(rootfs, c.image_config, c.options, hostname)
            if c.options.tty and not any(e.startswith("TERM=") for e in proc.env):
                proc.env.append("TERM=xterm")  # as docker run -t
            mounts = self._resolve_mounts(c, rootfs)
            netns, host_net, hosts = self._network_setup(c, hostname)
            if hosts is None and not host_net:
                hosts = str(c.dir / "hosts")
                _write_file(Path(hosts), f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
                                         f"127.0.1.1\t{hostname}\n", 0o644)
            _write_file(c.dir / "hostname", hostname + "\n", 0o644)
            _write_file(c.dir / "resolv.conf", spec_mod.host_resolv_conf(
                host_net, c.options.dns, c.options.dns_search), 0o644)
            # as the container will see them: an image's symlinks followed
            # inside its root (never out of it), so the mounts land there
            files = [(spec_mod.special_file_target(rootfs, dest), src, ro) for dest, src, ro in (
                [("/etc/hosts", hosts, True)] if hosts else []) + [
                ("/etc/hostname", str(c.dir / "hostname"), False),
                ("/etc/resolv.conf", str(c.dir / "resolv.conf"), False)]]
            cwd_rel = spec_mod.resolve_in_root(rootfs, proc.cwd, what="working directory")
            (rootfs / cwd_rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
            spec = spec_mod.build_spec(
                proc, hostname=hostname, mounts=mounts, netns=netns, share_host_net=host_net,
                cgroups_path=cgroups_path(c.id), memory=c.options.memory,
                pids_limit=c.options.pids_limit, files=files, readonly_root=c.options.read_only,
                terminal=c.options.tty,
            )
            # written again at every start, so no fsync (it cost each start ~1-2 ms)
            _write_file(c.bundle / "config.json", json.dumps(spec, indent=1), 0o600)  # -e values
            self._update(c.id, mounts=[m.__dict__ for m in mounts])
        except BaseException:
            self.teardown(c)
            for m in mounts:  # attached but not yet recorded
                if m.kind == "volume":
                    try:
                        self.volumes.detach(m.name, c.id)
                    except Exception:  # noqa: BLE001 - undo continues
                        pass
            raise

    def _resolve_mounts(self, c: Container, rootfs: Path) -> list[ResolvedMount]:
        from .spec import resolve_in_root

        wanted = list(c.options.mounts)
        covered = {m.target.rstrip("/") for m in wanted}
        for path in sorted((c.image_config.get("config") or {}).get("Volumes") or {}):
            # An image VOLUME nobody mounted gets a volume named after the
            # container, so that a successor of the same name finds its data.
            if path.rstrip("/") not in covered and path.startswith("/"):
                slug = "".join(ch if ch.isalnum() else "_" for ch in path.strip("/")) or "root"
                wanted.append(Mount("volume", path, f"{c.name}_{slug}"))
        out: list[ResolvedMount] = []
        try:
            for m in wanted:
                target = resolve_in_root(rootfs, m.target, what="mount target")
                if target == "/":
                    raise BadInput(f"mount target {m.target} resolves to / in the image")
                host_target = rootfs / target.lstrip("/")
                if m.kind == "volume":
                    seed = host_target if host_target.is_dir() else None
                    src = str(self.volumes.attach(m.source, c.id, seed, readonly=m.readonly))
                    out.append(ResolvedMount("volume", src, target, m.readonly, (), m.source))
                    host_target.mkdir(parents=True, exist_ok=True)
                elif m.kind == "bind":
                    if not os.path.exists(m.source):
                        raise BadInput(f"bind mount source {m.source} does not exist")
                    if os.path.isdir(m.source):
                        host_target.mkdir(parents=True, exist_ok=True)
                    elif not host_target.exists():
                        host_target.parent.mkdir(parents=True, exist_ok=True)
                        host_target.touch()
                    out.append(ResolvedMount("bind", m.source, target, m.readonly))
                else:
                    host_target.mkdir(parents=True, exist_ok=True)
                    out.append(ResolvedMount("tmpfs", "tmpfs", target, m.readonly,
                                             tuple(m.options)))
        except BaseException:
            for r in out:
                if r.kind == "volume":
                    self.volumes.detach(r.name, c.id)
            raise
        return out

    def _network_setup(self, c: Container, hostname: str) -> tuple[str | None, bool, str | None]:
        """(netns path or None for a fresh one, share the host's?, hosts file).
        The one place where the network manager is wired in."""
        net = c.options.network
        if net == "host":
            return None, True, None
        if net == "none" or self.network is None:
            return None, False, None
        # net None: the default network (created on first use by the manager)
        ports = [f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}:{p.container_port}/{p.proto}"
                 for p in c.options.ports]
        att = self.network.connect(c.id, net, hostname, ip=c.options.ip,
                                   ports=ports, aliases=[c.name])
        return str(att.netns_path), False, (str(att.hosts_path) if att.hosts_path else None)

    def netns_of(self, c: Container) -> str | None:
        """Where the container's network namespace is seen from the host."""
        if c.options.network == "host":
            return None
        if c.pid and pid_alive(c.pid, None):
            return f"/proc/{c.pid}/ns/net"
        return None

    def teardown(self, c: Container) -> None:
        """Undo prepare: runtime state, cgroups, mounts, volumes, network."""
        try:
            self.executor_for(c).cleanup(c.id)
        except (BadInput, OSError):
            pass
        rootfs_mod.umount_rootfs(c.dir)
        # Every volume the container may have attached: the recorded mounts,
        # plus what it asked for (a start cut short attaches before recording).
        names = {m["name"] for m in self._lookup_mounts(c) if m.get("kind") == "volume"}
        names |= {m.source for m in c.options.mounts if m.kind == "volume"}
        for name in sorted(names):
            try:
                self.volumes.detach(name, c.id)
            except Exception:  # noqa: BLE001 - teardown continues
                pass
        if self.network is not None and c.options.network not in ("none", "host"):
            try:
                self.network.disconnect(c.id)
            except Exception:  # noqa: BLE001
                pass

    def _lookup_mounts(self, c: Container) -> list[dict[str, Any]]:
        row = self.store.db.execute("SELECT mounts FROM containers WHERE id = ?", (c.id,)).fetchone()
        return json.loads(row[0]) if row else c.mounts

    # -- lifecycle ----------------------------------------------------------------
    def run(self, opts: RunOptions) -> int:
        """``volmerge run`` in the foreground: the exit code of the container."""
        c = self.create(opts)
        try:
            if opts.detach:
                self.start(c.id)
                return 0
            return int(self.start(c.id, attach=True) or 0)
        except BadInput:
            self.remove(c.id, force=True)
            raise
        finally:
            if opts.rm and not opts.detach:
                try:
                    self.remove(c.id, force=True)
                except NotFound:
                    pass

    def start(self, ref: str, *, attach: bool = False, stop_timeout: float = 10) -> int | None:
        """Start a created or exited container.  ``attach``: run it in this
        process with its stdio and return its exit code; else hand it to a
        supervisor and return once it runs.  A container whose stop is under
        way (its caller may have been killed after the signal) is first seen
        through that stop (SIGKILL after ``stop_timeout``): left alone it
        would exit after this start returned, and not be restarted."""
        c = self._lookup(ref)
        if c.state in LIVE_STATES and c.stop_requested:
            self.stop(c.id, timeout=stop_timeout)
        with self.store.lock("container-" + c.id):
            c = self.get(ref)
            if c.state in LIVE_STATES:
                if attach:
                    raise Conflict(f"container {c.name} is already running")
                return None
            reset = {"stop_requested": 0, "error": None, "health": None, "health_detail": None,
                     "restart_count": 0 if c.state == "created" else c.restart_count}
            # a container just created has these already: no commit (an fsync) for nothing
            self._update(c.id, **{k: v for k, v in reset.items() if getattr(c, k) != v})
            self.prepare(c)
            if not attach:
                try:
                    self._spawn_supervisor(c)
                except BaseException:
                    self.teardown(self._lookup(c.id))
                    raise
                return None
        from .supervisor import supervise

        return supervise(self, c.id, foreground=True)

    def _spawn_supervisor(self, c: Container) -> None:
        import subprocess

        r, w = os.pipe()
        cmd = [sys.executable, "-m", "volmerge.runtime.supervisor", c.id, "--root", str(self.store.root),
               "--notify-fd", str(w)]
        if self.factory:
            cmd += ["--factory", self.factory]
        errlog = open(c.dir / "supervisor.err", "ab")
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=errlog, pass_fds=(w,), start_new_session=True,
                                 cwd="/")
        finally:
            os.close(w)
            errlog.close()
        msg = b""
        with os.fdopen(r, "rb") as f:
            msg = f.read()
        p.wait()
        text = msg.decode(errors="replace").strip()
        if text.startswith("ok"):
            return
        if text.startswith("err "):
            code, _, message = text[4:].partition(" ")
            raise (BadInput if code == "2" else NotDone)(message)
        detail = ""
        try:
            detail = (c.dir / "supervisor.err").read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        raise NotDone(f"supervisor of {c.name} failed to start the container"
                      + (f": {detail}" if detail else ""))

    def stop(self, ref: str, timeout: float = 10) -> Container:
        """The image's StopSignal (default SIGTERM), then SIGKILL after
        ``timeout`` seconds; the restart policy does not restart a container
        stopped this way."""
        c = self.get(ref)
        if c.state not in LIVE_STATES:
            return c
        self._update(c.id, stop_requested=1)
        if c.state == "paused":
            self.unpause(c.id)
        try:  # the image's STOPSIGNAL (e.g. SIGINT for PostgreSQL's fast shutdown)
            stopsig = parse_signal((c.image_config.get("config") or {}).get("StopSignal") or "TERM")
        except BadInput:
            stopsig = signal.SIGTERM
        self._signal(c, stopsig)
        if self._wait_stopped(c, timeout):
            return self.get(c.id)
        self._signal(self.get(c.id), signal.SIGKILL)
        if not self._wait_stopped(c, 15):
            raise NotDone(f"container {c.name} did not stop")
        return self.get(c.id)

    def _wait_stopped(self, c: Container, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            cur = self.get(c.id)
            if cur.state not in LIVE_STATES:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _signal(self, c: Container, sig: int) -> None:
        if c.pid:
            self.executor_for(c).kill(c.id, c.pid, sig)

    def kill(self, ref: str, sig: str | int = "TERM") -> Container:
        signum = parse_signal(sig)
        c = self.get(ref)
        if c.state not in LIVE_STATES or not c.pid:
            raise Conflict(f"container {c.name} is not running")
        if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self._update(c.id, stop_requested=1 if signum == signal.SIGKILL else 0)
        if c.state == "paused" and signum == signal.SIGKILL:
            self.unpause(c.id)
        self._signal(c, signum)
        return c

    def restart(self, ref: str, timeout: float = 10) -> Container:
        self.stop(ref, timeout)
        self.start(ref)
        return self.get(ref)

    def remove(self, ref: str, force: bool = False) -> None:
        """Remove a stopped container (``force``: kill it first) and its layer."""
        c = self.get(ref)
        if c.state in LIVE_STATES:
            if not force:
                raise Conflict(f"container {c.name} is {c.state}: stop it first or use --force")
            self._update(c.id, stop_requested=1)
            if c.state == "paused":
                self.unpause(c.id)
            self._signal(c, signal.SIGKILL)
            if not self._wait_stopped(c, 15):
                raise NotDone(f"container {c.name} did not stop")
            c = self.get(c.id)
        with self.store.lock("container-" + c.id):
            self.teardown(c)
            if self.network is not None and c.options.network not in ("none", "host"):
                self.network.disconnect(c.id, release=True)  # the address is free again
            with self.store.transaction() as db:
                db.execute("DELETE FROM containers WHERE id = ?", (c.id,))
            try:
                fsutil.rmtree(c.dir)
            except OSError:
                rootfs_mod.umount_rootfs(c.dir)
                fsutil.rmtree(c.dir)

    def rename(self, ref: str, new_name: str) -> Container:
        """Give a container another name (the upgrade keeps an old generation
        as ``NAME.genN``).  Conflict when the name is taken."""
        check_name(new_name)
        c = self._lookup(ref)
        with self.store.lock("containers"), self.store.transaction() as db:
            other = db.execute("SELECT id FROM containers WHERE name = ?", (new_name,)).fetchone()
            if other is not None and other[0] != c.id:
                raise Conflict(f"container name {new_name!r} is already in use")
            opts = json.loads(db.execute("SELECT options FROM containers WHERE id = ?",
                                         (c.id,)).fetchone()[0])
            opts["name"] = new_name
            db.execute("UPDATE containers SET name = ?, options = ? WHERE id = ?",
                       (new_name, json.dumps(opts), c.id))
        return self._lookup(c.id)

    def pause(self, ref: str) -> None:
        c = self.get(ref)
        if c.state != "running":
            raise Conflict(f"container {c.name} is not running")
        self.executor_for(c).pause(c.id)
        self._update(c.id, state="paused")

    def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if c.state != "paused":
            raise Conflict(f"container {c.name} is not paused")
        self.executor_for(c).unpause(c.id)
        self._update(c.id, state="running")

    def exec(self, ref: str, argv: list[str], env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None, stdio: Any = None,
             tty: bool = False) -> int:
        """Run ``argv`` in the running container; its exit code.  ``tty``: on
        a pseudo-terminal of the container's (the caller's stdin must be one)."""
        from .executors.base import Stdio
        from .spec import resolve_user

        c = self.get(ref)
        if c.state != "running" or not c.pid:
            raise Conflict(f"container {c.name} is not running")
        if not argv:
            raise BadInput("exec needs a command")
        spec = json.loads((c.bundle / "config.json").read_text())
        proc = spec["process"]
        envd = dict(e.split("=", 1) for e in proc["env"] if "=" in e)
        envd.update(env or {})
        if tty:
            envd.setdefault("TERM", "xterm")
        if user:
            uid, gid, _extra, _home = resolve_user(c.rootfs, user)
        else:
            uid, gid = proc["user"]["uid"], proc["user"]["gid"]
        return self.executor_for(c).exec(
            c.id, c.pid, argv, env=[f"{k}={v}" for k, v in envd.items()], uid=uid, gid=gid,
            cwd=workdir or proc["cwd"], stdio=stdio or Stdio(0, 1, 2), tty=tty)

    def wait(self, ref: str, *, healthy: bool = False, timeout: float | None = None) -> int | str:
        """Until the container exits (its exit code) or, with ``healthy``,
        until its health check passes ("healthy"; "running" when it has no
        check).  NotDone (exit 1) on timeout, exit or unhealthy."""
        c = self._lookup(ref)
        if healthy:
            from .health import wait_healthy

            def read() -> tuple[str, str | None]:
                cur = self.get(c.id)
                return cur.state, cur.health

            try:
                return wait_healthy(read, timeout)
            except RuntimeError as exc:
                raise NotDone(f"container {c.name} is not healthy: {exc}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            cur = self.get(c.id)
            if cur.state not in LIVE_STATES and cur.state != "created":
                return cur.exit_code if cur.exit_code is not None else 0
            if cur.state == "created" and not cur.started_at:
                return cur.exit_code or 0
            if deadline is not None and time.monotonic() > deadline:
                raise NotDone(f"container {c.name} still {cur.state} after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def health(self, ref: str) -> Any:
        from .health import HealthStatus

        c = self.get(ref)
        d = c.health_detail or {}
        return HealthStatus(c.health, int(d.get("failing_streak", 0)), list(d.get("log", [])))

    def logs(self, ref: str, follow: bool = False, tail: int | None = None,
                    since: float | None = None) -> Iterator[tuple[str, str, float]]:
        """(stream, text, unix time) of a detached container's output, a line
        each (a very long line in pieces): with ``since``, only what was
        written from then on; with ``tail``, only the last ``tail`` of what is
        there now; with ``follow``, then what comes until the container exits."""
        c = self.get(ref)
        path = c.log_path
        pos = 0
        buf = b""
        first = True
        while True:
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                data = b""
            buf += data
            *lines, buf = buf.split(b"\n")
            entries = []
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                t = float(rec.get("t") or 0)
                if since is None or t >= since:
                    entries.append((rec.get("s", "stdout"), rec.get("d", ""), t))
            if first and tail is not None:
                entries = entries[len(entries) - tail:] if tail > 0 else []
            first = False
            yield from entries
            if not follow:
                return
            if not data:
                cur = self._lookup(c.id)
                if cur.state not in LIVE_STATES and not self._owner_alive(cur):
                    # one more read: the owner may have written its last lines
                    follow = False
                    continue
                time.sleep(0.1)

    # -- reconciliation -------------------------------------------------------------
    def _owner_alive(self, c: Container) -> bool:
        return pid_alive(c.owner_pid, c.owner_start)

    def _reconcile_one(self, c: Container) -> Container:
        if c.state not in LIVE_STATES or self._owner_alive(c):
            return c
        # The owner (supervisor or foreground CLI) died without recording an
        # exit: kill what is left, undo the run and say so.
        with self.store.lock("container-" + c.id):
            cur = self._lookup(c.id)
            if cur.state not in LIVE_STATES or self._owner_alive(cur):
                return cur
            killed = False
            if cur.pid and proc_start_time(cur.pid):
                try:
                    self.executor_for(cur).unpause(cur.id)
                except Exception:  # noqa: BLE001
                    pass
                try:
                    os.kill(cur.pid, signal.SIGKILL)
                    killed = True
                except OSError:
                    pass
            self.teardown(cur)
            self._update(cur.id, state="exited", exit_code=137 if killed else cur.exit_code,
                         finished_at=time.time(), health=None,
                         error="owner process died; container reconciled", pid=None)
            return self._lookup(cur.id)

    def reconcile(self) -> list[str]:
        """Fix the state of every container whose owner died; their names."""
        fixed = []
        for row in self.store.db.execute("SELECT * FROM containers").fetchall():
            c = self._row_to_container(row)
            if c.state in LIVE_STATES and not self._owner_alive(c):
                self._reconcile_one(c)
                fixed.append(c.name)
        return fixed


def parse_signal(sig: str | int) -> int:
    if isinstance(sig, int) or str(sig).isdigit():
        n = int(sig)
        if not 0 < n < 65:
            raise BadInput(f"invalid signal {sig!r}")
        return n
    s = str(sig).upper()
    s = s[3:] if s.startswith("SIG") else s
    if s not in SIGNALS:
        raise BadInput(f"invalid signal {sig!r}")
    return SIGNALS[s]


_IMAGE_CHECK_DONE = False


def register_image_check() -> None:
    """Tell the image store which containers use an image (image rm refuses);
    ``image rm`` calls it, as it makes no Engine."""
    global _IMAGE_CHECK_DONE
    if _IMAGE_CHECK_DONE:
        return
    _IMAGE_CHECK_DONE = True
    try:
        from . import images  # type: ignore[attr-defined]
    except ImportError:
        return
    reg = getattr(images, "register_user_check", None)
    if reg is not None:
        reg(_image_users)


def _image_users(store: Any, image_id: str) -> list[str]:
    store.ensure_schema("containers", MIGRATIONS)
    rows = store.db.execute("SELECT name FROM containers WHERE image_id = ?", (image_id,)).fetchall()
    return [r[0] for r in rows]


def _pick(words: Sequence[str]) -> str:
    """A random word (os.urandom: `secrets` costs 4 ms of start-up)."""
    return words[int.from_bytes(os.urandom(4), "little") % len(words)]


def _write_file(path: Path, text: str, mode: int) -> None:
    """Write ``path`` with exactly ``mode`` whatever the caller's umask (a
    container's /etc/hosts, /etc/resolv.conf are bind-mounted: 0666 would let
    its non-root users change them), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, mode)
        f.write(text)
