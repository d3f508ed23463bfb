"""The ``containers`` table: its schema, the typed record of one row, and the
one object that reads and writes rows (:class:`ContainerRecords`).

This is the bottom of the container engine (an import-linter contract keeps
it there): the engine's lifecycle, the bundle, the supervisor and the
reconciliation all reach the table through a :class:`ContainerRecords`
they are handed, and get back a frozen :class:`Container`, never a row.

The owner of a running container (the supervisor, or the CLI process of a
foreground run) is part of the record: its pid and the kernel's start time
of that pid, so that any later command can tell a live owner from a dead
one or a recycled pid (:meth:`Container.owner_alive`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import BadInput, Conflict, NotFound
from .options import RunOptions
from .store import DatabaseError, register_sweeper
from .value import FrozenValue, fields

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Mapping
    from typing import Any

COMPONENT = "containers"

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

#: states in which a container has (or is about to have) a process and an owner
LIVE_STATES = ("running", "paused", "restarting")
_HEX64 = r"[0-9a-f]{64}"  # a container id (compiled and cached by re when first used)


def prestarted(c: Container) -> bool:
    """A created container whose start a live (or dead) process prepared
    (runtime.lifecycle.Lifecycle.prestart): that process is its owner until
    the start."""
    return c.state == "created" and c.owner_pid is not None


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a
    live process from a recycled pid; None for no process or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        if rest[0] == b"Z":
            return None
        return rest[19].decode()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None, start: str | None) -> bool:
    """``pid`` runs, and is the process that started at ``start`` (if given)."""
    if not pid:
        return False
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


class Container(FrozenValue):
    """One row of the ``containers`` table, decoded, and its directory.
    Frozen: a record changes through :meth:`ContainerRecords.update`, which
    returns a new one."""

    __slots__ = ("id", "name", "image_id", "image_ref", "state", "runtime", "options",
                 "image_config", "lowers", "mounts", "pid", "owner_pid", "owner_start",
                 "exit_code", "health", "health_detail", "restart_count", "stop_requested",
                 "error", "created", "started_at", "finished_at", "dir")

    if TYPE_CHECKING:  # the fields' types (set in __init__ by _assign)
        id: str
        name: str
        image_id: str
        image_ref: str
        state: str
        runtime: str
        options: RunOptions
        image_config: dict[str, Any]
        lowers: tuple[str, ...]
        mounts: tuple[dict[str, Any], ...]
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
        dir: Path

    def __init__(self, *, id: str, name: str, image_id: str, image_ref: str, state: str,
                 runtime: str, options: RunOptions, image_config: dict[str, Any],
                 lowers: tuple[str, ...], mounts: tuple[dict[str, Any], ...], pid: int | None,
                 owner_pid: int | None, owner_start: str | None, exit_code: int | None,
                 health: str | None, health_detail: dict[str, Any] | None, restart_count: int,
                 stop_requested: bool, error: str | None, created: float,
                 started_at: float | None, finished_at: float | None,
                 dir: Path = Path("/")) -> None:
        self._assign(locals())

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

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def owner_alive(self) -> bool:
        return pid_alive(self.owner_pid, self.owner_start)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "image": self.image_ref, "image_id": self.image_id,
            "state": self.state, "runtime": self.runtime, "pid": self.pid,
            "exit_code": self.exit_code, "health": self.health,
            "health_detail": self.health_detail, "restart_count": self.restart_count,
            "error": self.error, "created": self.created, "started_at": self.started_at,
            "finished_at": self.finished_at, "rootfs": str(self.rootfs), "upper": str(self.upper),
            "bundle": str(self.bundle), "log": str(self.log_path), "mounts": list(self.mounts),
            "options": self.options.to_json(),
        }


#: the columns a record may change (``id`` and ``created`` never change; ``dir`` is no column)
COLUMNS = frozenset(fields(Container)) - {"id", "created", "dir"}
_JSON_COLUMNS = ("options", "image_config", "lowers", "mounts", "health_detail")


def container_from_row(row: sqlite3.Row | Mapping[str, Any], cdir: Path) -> Container:
    """The record of one ``containers`` row (JSON columns decoded)."""
    return Container(
        id=row["id"], name=row["name"], image_id=row["image_id"], image_ref=row["image_ref"],
        state=row["state"], runtime=row["runtime"],
        options=RunOptions.from_json(json.loads(row["options"])),
        image_config=json.loads(row["image_config"]), lowers=tuple(json.loads(row["lowers"])),
        mounts=tuple(json.loads(row["mounts"])), pid=row["pid"], owner_pid=row["owner_pid"],
        owner_start=row["owner_start"], exit_code=row["exit_code"], health=row["health"],
        health_detail=json.loads(row["health_detail"]) if row["health_detail"] else None,
        restart_count=row["restart_count"], stop_requested=bool(row["stop_requested"]),
        error=row["error"], created=row["created"], started_at=row["started_at"],
        finished_at=row["finished_at"], dir=cdir,
    )


def encode_columns(cols: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as stored: JSON columns serialised (a value already a
    string is taken as stored JSON), booleans as integers.  An unknown
    column is a programming error (ValueError), never SQL."""
    unknown = set(cols) - COLUMNS
    if unknown:
        raise ValueError(f"not a container column: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for k, v in cols.items():
        if k == "options" and isinstance(v, RunOptions):
            v = v.to_json()
        if k in _JSON_COLUMNS and v is not None and not isinstance(v, str):
            v = json.dumps(list(v) if isinstance(v, tuple) else v)
        elif isinstance(v, bool):
            v = int(v)
        out[k] = v
    return out


class ContainerRecords:
    """Reads and writes the ``containers`` table of one store.

    What the supervisor and the lifecycle are handed instead of the engine's
    internals.  Lookups return the row as it is (no reconciliation: that is
    the engine's ``get``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.ensure_schema(COMPONENT, MIGRATIONS)

    def _record(self, row: sqlite3.Row) -> Container:
        return container_from_row(row, self.store.path("containers", row["id"]))

    def lookup(self, ref: str) -> Container:
        """By name, id or unique id prefix; NotFound, or BadInput when ambiguous."""
        db = self.store.db
        row = db.execute("SELECT * FROM containers WHERE name = ? OR id = ?", (ref, ref)).fetchone()
        if row is None and ref and all(ch in "0123456789abcdef" for ch in ref):
            rows = db.execute("SELECT * FROM containers WHERE id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise BadInput(f"container id prefix {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no such container: {ref}")
        return self._record(row)

    def all(self) -> list[Container]:
        """Every container, newest first."""
        rows = self.store.db.execute("SELECT * FROM containers ORDER BY created DESC").fetchall()
        return [self._record(r) for r in rows]

    def stop_requested(self, cid: str) -> bool:
        row = self.store.db.execute("SELECT stop_requested FROM containers WHERE id = ?",
                                    (cid,)).fetchone()
        return bool(row and row[0])

    def recorded_mounts(self, c: Container) -> tuple[dict[str, Any], ...]:
        """The mounts recorded now (``c`` may be older than the last prepare)."""
        row = self.store.db.execute("SELECT mounts FROM containers WHERE id = ?",
                                    (c.id,)).fetchone()
        return tuple(json.loads(row[0])) if row else c.mounts

    def name_taken(self, name: str) -> bool:
        return self.store.db.execute("SELECT 1 FROM containers WHERE name = ?",
                                     (name,)).fetchone() is not None

    def users_of_image(self, image_id: str) -> list[str]:
        return image_users(self.store, image_id)

    def update(self, cid: str, **cols: Any) -> None:
        """Change a container's run state (running, exited, pid, health, mounts,
        stop request...): not durable (Store.transaction), so a ``run`` pays
        no fsync for each of them.  After a power loss the last of them may
        be missing; nothing of that run is left then (no process, no mount,
        no network), and the reconciliation of a state that still says
        "running" (its owner is dead) records the exit, as after any crash.
        A container's existence is durable: :meth:`insert`, :meth:`rename`
        and :meth:`delete`."""
        if not cols:
            return
        values = encode_columns(cols)
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.store.transaction(durable=False) as db:
            db.execute(f"UPDATE containers SET {sets} WHERE id = ?", (*values.values(), cid))

    def insert(self, *, cid: str, name: str | None, image_id: str, image_ref: str, runtime: str,
               options: RunOptions, image_config: dict[str, Any], lowers: list[str],
               created: float) -> Container:
        """A new container in state ``created`` with its directory; Conflict
        when the name is taken (checked under the ``containers`` lock).
        ``name`` None: a generated one that is free, chosen under the same
        lock (the options record it too)."""
        cdir = self.store.path("containers", cid)
        with self.store.lock("containers"), self.store.transaction() as db:
            if name is None:
                name = _free_name(lambda n: self.name_taken(n))
            elif db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"container name {name!r} is already in use")
            options = RunOptions.from_json({**options.to_json(), "name": name})
            cdir.mkdir(mode=0o700)
            db.execute(
                "INSERT INTO containers (id, name, image_id, image_ref, state, runtime, options,"
                " image_config, lowers, created) VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?)",
                (cid, name, image_id, image_ref, runtime, json.dumps(options.to_json()),
                 json.dumps(image_config), json.dumps(lowers), created),
            )
        return self.lookup(cid)

    def rename(self, cid: str, new_name: str) -> Container:
        """Name and the name in the options change together; Conflict when taken."""
        with self.store.lock("containers"), self.store.transaction() as db:
            other = db.execute("SELECT id FROM containers WHERE name = ?", (new_name,)).fetchone()
            if other is not None and other[0] != cid:
                raise Conflict(f"container name {new_name!r} is already in use")
            opts = json.loads(db.execute("SELECT options FROM containers WHERE id = ?",
                                         (cid,)).fetchone()[0])
            opts["name"] = new_name
            db.execute("UPDATE containers SET name = ?, options = ? WHERE id = ?",
                       (new_name, json.dumps(opts), cid))
        return self.lookup(cid)

    def delete(self, cid: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (cid,))


def _sweep_prestarted(store: Any) -> None:
    """Store sweeper: the root of a created container whose start a process
    prepared (Lifecycle.prestart) and that died before the start, unmounted,
    and the owner forgotten.  One query when there is none.  Its network
    namespace is the network's sweeper's (runtime.network.rows.sweep_needed);
    nothing else was prepared.  A container whose lock is held (a start, a
    remove) is left to that command."""
    try:
        rows = store.db.execute("SELECT id, owner_pid, owner_start FROM containers"
                                " WHERE state = 'created' AND owner_pid IS NOT NULL").fetchall()
    except DatabaseError:
        return  # no containers table yet
    for cid, pid, start in rows:
        if pid_alive(pid, start):
            continue
        try:
            with store.lock("container-" + cid, blocking=False):
                now = store.db.execute("SELECT owner_pid, owner_start FROM containers WHERE"
                                       " id = ? AND state = 'created'", (cid,)).fetchone()
                if now is None or now[0] is None or pid_alive(now[0], now[1]):
                    continue
                from .rootfs import umount_rootfs

                umount_rootfs(store.path("containers", cid))
                with store.transaction(durable=False) as db:
                    db.execute("UPDATE containers SET owner_pid = NULL, owner_start = NULL"
                               " WHERE id = ?", (cid,))
        except BlockingIOError:
            continue


def _sweep_orphans(store: Any) -> None:
    """Store sweeper: a container directory that no record names, which a
    crash or a power loss leaves between making the directory and
    committing its record (``insert``), or between deleting the record and
    the directory (``rm``).  A directory count and a record count when
    there is none.  A directory whose record may still come (the
    ``containers`` lock held: an insert under way) or go (its container's
    lock held: a remove under way) is left to that command."""
    cdir = store.path("containers")
    try:
        names = [n for n in os.listdir(cdir) if re.fullmatch(_HEX64, n)]
        count = store.db.execute("SELECT count(*) FROM containers").fetchone()[0]
    except (OSError, DatabaseError):
        return  # no containers yet
    if len(names) <= count:
        return
    from .rootfs import discard_files, umount_rootfs

    try:
        with store.lock("containers", blocking=False):
            known = {r[0] for r in store.db.execute("SELECT id FROM containers")}
            for cid in sorted(set(names) - known):
                try:
                    with store.lock("container-" + cid, blocking=False):
                        umount_rootfs(cdir / cid)  # never delete through a mount
                        discard_files(store, cid)
                except BlockingIOError:
                    continue
    except BlockingIOError:
        return


register_sweeper(COMPONENT, _sweep_prestarted)
register_sweeper(COMPONENT + "-orphans", _sweep_orphans)


def image_users(store: Any, image_id: str) -> list[str]:
    """Names of the containers made from ``image_id`` (``image rm`` refuses then)."""
    store.ensure_schema(COMPONENT, MIGRATIONS)
    rows = store.db.execute("SELECT name FROM containers WHERE image_id = ?",
                            (image_id,)).fetchall()
    return [r[0] for r in rows]


_ADJ = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nifty", "quiet", "sharp",
        "tender", "vivid", "witty", "zesty", "bold", "happy")
_NOUN = ("otter", "heron", "lynx", "panda", "raven", "tapir", "yak", "koala", "bison", "crane",
         "gecko", "ibex", "lemur", "marten", "newt", "quokka")


def _free_name(taken: Callable[[str], bool]) -> str:
    """A generated container name (``adjective_noun``, as Docker's) not yet
    ``taken``; after 50 taken ones, ``c_`` and ten random hex digits."""
    for _ in range(50):
        name = f"{_pick(_ADJ)}_{_pick(_NOUN)}"
        if not taken(name):
            return name
    return "c_" + os.urandom(5).hex()


def _pick(words: Sequence[str]) -> str:
    """A random word (os.urandom: `secrets` costs 4 ms of start-up)."""
    return words[int.from_bytes(os.urandom(4), "little") % len(words)]
