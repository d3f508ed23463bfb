"""PostgreSQL data directories across major versions.

A volume whose root holds a PostgreSQL data directory (``PG_VERSION``)
cannot be file-merged: the new major version cannot read the old one's
files.  ``maybe_upgrade`` is called by the upgrade's merge before the tree
merge; it returns None when the volume is not such a data directory (or the
major version does not change), else it writes the new data directory into
``out`` (an overlay upper over ``ours``) and returns a tree-merge-shaped
report.

The upgrade itself — and its dry run — is strategies.sql.pgmajor's, the
one implementation (pg_upgrade or dump and restore, verification,
configuration).  What this module adds is where the programs run: each
image runs *its own* binaries, in a temporary container (network none, no
ports, the image's unprivileged user, an idle shell as its process) with
one store tmpdir bind-mounted at the *same* path as on the host, so the
paths pgmajor hands to the programs (the snapshot of the data, the new data
directory, the unix sockets psycopg connects to from the host, the dumps)
mean the same on both sides.  The new image's container also sees the old
image's root (read-only; pgwrap's wrappers run its programs there), so
that pg_upgrade has both versions side by side.  :class:`ContainerTools`
is pgmajor's tools interface for such a container; :func:`host_tools` the
one for this host's programs, with the system user it needs.  ``ours`` is
only read (under a copy-on-write overlay, :func:`.pgsnap.overlay_snapshot`,
or copied); the new data directory is then moved into ``out`` as an overlay
upper: top-level directories opaque, top-level entries the new version
lacks whited out.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volmerge.runtime import diag, overlayfmt

from ..errors import NotDone
from .pgsnap import overlay_snapshot, tmpfs_scratch

if TYPE_CHECKING:
    from volmerge.strategies.sql.pgtemp import HostTools


def _rmtree_quiet(path: str | os.PathLike[str]) -> None:
    """Best-effort removal of a work tree holding a clone of a container's
    data (iterative: shutil.rmtree recurses, and its ignore_errors does not
    cover RecursionError)."""

    from volmerge.runtime.fsutil import rmtree

    with contextlib.suppress(OSError):
        rmtree(path)

# Written by the temporary servers, meaningless to the real one.
SCRATCH_FILES = ("server.log", "postmaster.opts", "postmaster.pid")
# The programs the upgrade runs from an image (found beside its server).
TOOLS = ("postgres", "pg_ctl", "initdb", "pg_dump", "pg_dumpall", "pg_restore")
UNIX_PATH_MAX = 107
HOST_USER = "volmerge-pg"
_VERSION_RE = re.compile(rb"postgres \(PostgreSQL\) (\d+)(?:\.(\d+))?")


def host_tools(bindir: str, user: str = HOST_USER) -> HostTools:
    """pgmajor's tools for this host's ``bindir``: run as the system user
    ``user`` when we are root (created when missing: PostgreSQL refuses
    root, and the strategies library creates no users)."""
    import pwd

    from volmerge.strategies.sql.pgtemp import HostTools

    if os.geteuid() != 0:
        return HostTools(bindir)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", user], check=True, capture_output=True)
        pw = pwd.getpwnam(user)
    return HostTools(bindir, (pw.pw_uid, pw.pw_gid))


# -- finding an image's PostgreSQL ------------------------------------------------

@dataclass
class ImagePg:
    """Where an image keeps its PostgreSQL server, and which major version."""

    ref: str
    bindir: str      # inside the image
    major: str
    full: str


def _major(m: re.Match[bytes]) -> tuple[str, str]:
    a, b = m.group(1).decode(), (m.group(2) or b"").decode()
    full = f"{a}.{b}" if b else a
    return (f"{a}.{b}" if int(a) < 10 and b else a), full


def _image_ref(image: Any) -> str:
    return image.tags[0] if getattr(image, "tags", None) else image.id


def find_pg(ctx: Any, image: Any) -> ImagePg | None:
    """The image's server binaries: the first PATH directory (image Env) with
    ``postgres`` and its tools, else a usual place; version read from the
    binary's own version string (no need to run it)."""
    from volmerge.runtime import sys as rsys

    from .imageview import image_root

    cfg = (image.config or {}).get("config") or {}
    path = ""
    for e in cfg.get("Env") or []:
        if e.startswith("PATH="):
            path = e[5:]
    dirs = [d for d in path.split(":") if d.startswith("/")]
    dirs += ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"]
    with image_root(ctx.store, image) as root:
        pg_lib = rsys.path_in_root(root, "/usr/lib/postgresql")
        if pg_lib.is_dir():
            dirs += sorted((f"/usr/lib/postgresql/{v}/bin" for v in os.listdir(pg_lib)), reverse=True)
        for d in dirs:
            try:
                server = rsys.path_in_root(root, d + "/postgres")
                if not server.is_file() or not all(
                        rsys.path_in_root(root, f"{d}/{t}").is_file() for t in TOOLS):
                    continue
                m = _VERSION_RE.search(server.read_bytes())
            except (OSError, ValueError):
                continue
            if m:
                major, full = _major(m)
                return ImagePg(_image_ref(image), d, major, full)
    return None


# -- running an image's binaries --------------------------------------------------

@dataclass
class Timer:
    """Seconds per step (runner calls are grouped by tool and verb)."""

    steps: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.steps[name] = round(self.steps.get(name, 0.0) + seconds, 3)


class TempContainer:
    """A temporary container of ``image`` that idles, so that commands can be
    exec'd in it: network none, no ports, no health check, the workdir
    bind-mounted at its host path, every image VOLUME on a tmpfs (so no
    volume is created for it)."""

    def __init__(self, ctx: Any, pg: ImagePg, workdir: Path, role: str, image: Any,
                 old_root: Path | None = None, timer: Timer | None = None) -> None:
        self.ctx, self.pg, self.workdir, self.role = ctx, pg, workdir, role
        self.image, self.old_root, self.timer = image, old_root, timer
        #: paths of the old root mounted at the same place (what the new image lacks)
        self.borrow: list[str] = []
        self.id: str | None = None
        self.uid_gid: tuple[int, int] = (999, 999)

    def ensure(self) -> None:
        """Started on first use (the old image's container serves only the
        dump-and-restore path, which pg_upgrade usually makes unneeded)."""
        if self.id is None:
            t0 = time.monotonic()
            self.start()
            if self.timer is not None:
                self.timer.add(f"container start ({self.role})", time.monotonic() - t0)

    def start(self) -> None:
        from volmerge.runtime import sys as rsys
        from volmerge.runtime.options import HealthConfig, Mount, RunOptions

        from .pgwrap import OLD_ROOT

        cfg = (self.image.config or {}).get("config") or {}
        mounts = [Mount("bind", str(self.workdir), str(self.workdir))]
        if self.old_root is not None:  # the old image's root, for its programs (pgwrap)
            mounts.append(Mount("bind", OLD_ROOT, str(self.old_root), readonly=True))
            for path in self.borrow:
                mounts.append(Mount("bind", path, str(rsys.path_in_root(self.old_root, path)),
                                    readonly=True))
        for v in sorted(cfg.get("Volumes") or {}):
            if v.startswith("/") and v.rstrip("/") and not str(self.workdir).startswith(v.rstrip("/") + "/"):
                mounts.append(Mount("tmpfs", v, "tmpfs"))
        opts = RunOptions(
            image=self.pg.ref, name=f"pgupgrade-{secrets.token_hex(4)}-{self.role}",
            entrypoint=["/bin/sh", "-c"],
            command=["trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"],
            env={"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            user=cfg.get("User") or "postgres", mounts=mounts, network="none",
            health=HealthConfig(test=["NONE"]), detach=True,
            labels={"io.volmerge.temporary": "pg-major-upgrade"},
        )
        c = self.ctx.engine.create(opts)
        self.id = c.id
        self.ctx.engine.start(c.id)
        import json

        spec = json.loads((c.bundle / "config.json").read_text())
        user = spec["process"]["user"]
        if user["uid"] == 0:
            raise NotDone(f"{self.pg.ref}: its user is root; PostgreSQL needs an unprivileged user")
        self.uid_gid = (int(user["uid"]), int(user["gid"]))

    def remove(self) -> None:
        if self.id is not None:
            from volmerge.runtime.errors import NotFound

            try:
                self.ctx.engine.remove(self.id, force=True)
            except NotFound:
                pass
            self.id = None



@dataclass(frozen=True)
class ContainerTools:
    """pgmajor's tools interface for a :class:`TempContainer` (started on
    first use): the image's own program of that name, exec'd in the
    container as its user; output captured through files in the workdir,
    time added to ``timer``.  ``bindir``: another directory of programs
    in that container (the old image's, wrapped: pgwrap); ``cwd``: where
    they run; ``major``: the version they are, for the timings."""

    box: TempContainer
    timer: Timer
    bindir: str | None = None
    cwd: str = "/"
    major: str | None = None

    @property
    def user(self) -> tuple[int, int]:
        self.box.ensure()
        return self.box.uid_gid

    def run(self, tool: str, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        from volmerge.runtime.executors.base import Stdio

        box = self.box
        box.ensure()
        argv = [f"{self.bindir or box.pg.bindir}/{tool}", *args]
        label = f"{tool} {args[-1]}" if tool == "pg_ctl" and args else tool
        base = box.workdir / f".out-{secrets.token_hex(4)}"
        t0 = time.monotonic()
        try:
            with open(f"{base}.0", "w+b") as inp, open(f"{base}.1", "w+b") as out, \
                    open(f"{base}.2", "w+b") as err:
                inp.write((input or "").encode())
                inp.seek(0)
                rc = box.ctx.engine.exec(box.id, argv, workdir=self.cwd, stdio=Stdio(
                    subprocess.DEVNULL if input is None else inp, out, err))
                out.seek(0)
                err.seek(0)
                o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        finally:
            for suffix in (".0", ".1", ".2"):
                try:
                    os.unlink(f"{base}{suffix}")
                except FileNotFoundError:
                    pass
            self.timer.add(f"{label} ({self.major or box.pg.major})", time.monotonic() - t0)
        return subprocess.CompletedProcess(argv, rc, o, e)


# -- the hook ---------------------------------------------------------------------

def maybe_upgrade(ctx: Any, *, old_image: Any, new_image: Any, volume: str, target: str,
                  ours: Path, theirs: Path | None, out: Path, dry_run: bool) -> dict[str, Any] | None:
    """None: not a PostgreSQL data directory changing major version.  Else
    the new data directory is in ``out`` (nothing written in a dry run) and
    the report says what was (would be) replayed."""
    from volmerge.strategies.sql.pgmajor import read_version

    data_ver = read_version(ours)
    if data_ver is None:
        return None
    new = find_pg(ctx, new_image)
    if new is None or new.major == data_ver:
        return None  # not a PostgreSQL image, or the same major version: a file merge
    if old_image is None:
        raise NotDone(f"volume {volume}: PostgreSQL {data_ver} data needs the old image's binaries")
    old = find_pg(ctx, old_image)
    if old is None or old.major != data_ver:
        raise NotDone(f"volume {volume} holds PostgreSQL {data_ver} data but the old image "
                      f"{_image_ref(old_image)} has "
                      f"{'no PostgreSQL' if old is None else 'PostgreSQL ' + old.full}")
    if _num(new.major) < _num(data_ver):
        raise NotDone(f"volume {volume}: PostgreSQL {data_ver} -> {new.major} is a downgrade; "
                      "a data directory cannot be carried to an older major version")
    if dry_run:
        return _preview(ctx, old, new, old_image, ours)
    return _convert(ctx, old, new, old_image, new_image, ours, out)


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return 0.0


def _entry(note: str, action: str = "merged") -> dict[str, Any]:
    return {"path": "PG_VERSION", "action": action, "strategy": "pg-major", "conflicts": [],
            "notes": [note]}


def _report(entry: dict[str, Any], sql: dict[str, Any]) -> dict[str, Any]:
    return {"summary": {"conflicts": 0, "merged": 1}, "files": [entry], "sql": [{**entry, **sql}]}


def _workdir(ctx: Any) -> Path:
    w = ctx.store.tmpdir("pg")
    sock = w / "old-sock" / ".s.PGSQL.5433"
    if len(str(sock)) > UNIX_PATH_MAX - 1:
        _rmtree_quiet(w)
        raise NotDone(f"store root path too long for a PostgreSQL unix socket ({sock})")
    os.chmod(w, 0o711)
    return w


def _preview(ctx: Any, old: ImagePg, new: ImagePg, old_image: Any, ours: Path) -> dict[str, Any]:
    """Count what would be replayed: pgmajor's dry run, the old server on a
    copy of the data in a container of the old image."""
    from volmerge.strategies.sql.pgmajor import preview_datadir

    timer = Timer()
    head = f"PostgreSQL {old.major} -> {new.major}"
    work = _workdir(ctx)
    box = TempContainer(ctx, old, work, "old", old_image)
    try:
        t0 = time.monotonic()
        box.start()
        timer.add("container start", time.monotonic() - t0)
        dbs = preview_datadir(ours, ContainerTools(box, timer), workdir=work, timing=timer.add)
    except NotDone as exc:
        note = f"{head}: pg_upgrade or dump and restore, verified (counts unavailable: {exc})"
        return _report(_entry(note), {"old_version": old.major, "new_version": new.major,
                                      "dry_run": True, "databases": []})
    finally:
        box.remove()
        _rmtree_quiet(work)
    rows = sum(t["rows"] for d in dbs for t in d["tables"])
    tables = sum(len(d["tables"]) for d in dbs)
    note = (f"{head}: would replay {len(dbs)} databases, {tables} tables, {rows} rows "
            f"(pg_upgrade with {old.major}'s programs beside {new.major}'s, else dump and "
            "restore; verified)")
    return _report(_entry(note), {"old_version": old.major, "new_version": new.major,
                                  "dry_run": True, "databases": dbs, "timings": timer.steps})


def _convert(ctx: Any, old: ImagePg, new: ImagePg, old_image: Any, new_image: Any,
             ours: Path, out: Path) -> dict[str, Any]:
    """pgmajor's upgrade with each image's programs: the new image's
    container also sees the old image's root (read-only, pgwrap) so that
    pg_upgrade can run the old programs; the old image's own container is
    started only if the upgrade falls back to dump and restore."""
    from volmerge.strategies.sql.pgmajor import OldBeside, upgrade_datadir

    from . import settings
    from .imageview import image_root
    from .pgwrap import write_wrappers

    timer = Timer()
    t_all = time.monotonic()
    work = _workdir(ctx)
    new_data = work / "new-data"
    written = False
    with image_root(ctx.store, old_image) as old_root:
        boxes = [TempContainer(ctx, old, work, "old", old_image, timer=timer),
                 TempContainer(ctx, new, work, "new", new_image, old_root=old_root, timer=timer)]
        boxes[1].borrow = _borrowed(ctx, old_root, new_image)
        try:
            beside = None
            try:
                wrapped = write_wrappers(old_root, old.bindir, work / "old-bin")
                beside = OldBeside(ContainerTools(boxes[1], timer, bindir=wrapped, major=old.major),
                                   wrapped)
            except (OSError, ValueError) as exc:
                diag.ignored(__name__, "the old image's programs cannot be wrapped", exc)
            t0 = time.monotonic()
            result = upgrade_datadir(ours, new_data, ContainerTools(boxes[0], timer),
                                     ContainerTools(boxes[1], timer), workdir=work,
                                     timing=timer.add, beside=beside, snapshot=overlay_snapshot,
                                     scratch=tmpfs_scratch, small_bytes=settings.pg_upgrade_min(),
                                     sync=False)  # write_upper's os.sync() makes it durable
            timer.add("upgrade, verify (total)", time.monotonic() - t0)
            dbs, carried = result.databases, result.config.note()
            t0 = time.monotonic()
            written = True
            write_upper(new_data, ours, out)
            timer.add("write upper", time.monotonic() - t0)
        except BaseException:
            if written:
                _empty(out)
            raise
        finally:
            t0 = time.monotonic()
            for b in reversed(boxes):
                try:
                    b.remove()
                except Exception as exc:  # noqa: BLE001 - the other one and the dir still go
                    diag.ignored(__name__, "removing a temporary PostgreSQL container", exc)
            _rmtree_quiet(work)
            timer.add("cleanup", time.monotonic() - t0)
    rows = sum(t["rows"] for d in dbs for t in d["tables"])
    tables = sum(len(d["tables"]) for d in dbs)
    seqs = sum(len(d["sequences"]) for d in dbs)
    how = (f"by {result.method}" if result.fallback is None
           else f"by {result.method} (pg_upgrade not used: {result.fallback})")
    note = (f"PostgreSQL {old.major} -> {new.major} {how}: {len(dbs)} databases, {tables} tables, "
            f"{rows} rows, {seqs} sequences replayed, verified")
    entry = _entry(note)
    if carried:
        entry["notes"].append(carried)
    timer.add("total", time.monotonic() - t_all)
    return _report(entry, {"old_version": old.major, "new_version": new.major,
                           "new_server": new.full, "tables": tables, "rows": rows,
                           "method": result.method, "fallback": result.fallback,
                           "databases": dbs, "timings": timer.steps})


#: absolute paths compiled into PostgreSQL programs that matter to a server:
#: Debian builds --with-system-tzdata
_ABSOLUTE = ("/usr/share/zoneinfo",)


def _borrowed(ctx: Any, old_root: Path, new_image: Any) -> list[str]:
    """What the old programs read at an absolute path that the new image
    lacks (its time zone data): mounted from the old root at that path."""
    from volmerge.runtime import sys as rsys

    from .imageview import image_root

    with image_root(ctx.store, new_image) as new_root:
        return [p for p in _ABSOLUTE if rsys.path_in_root(old_root, p).is_dir()
                and not rsys.path_in_root(new_root, p).is_dir()]


# -- the overlay upper -------------------------------------------------------------

def write_upper(new_data: Path, ours: Path, out: Path) -> None:
    """Make ``out`` (an empty overlay upper over ``ours``) show exactly
    ``new_data``: its top-level entries moved in (directories opaque), every
    other top-level entry of ``ours`` whited out, the root's owner and mode
    those of the new data directory."""
    out.mkdir(parents=True, exist_ok=True)
    if any(os.scandir(out)):
        raise NotDone(f"{out}: the volume's new live layer is not empty")
    for name in SCRATCH_FILES:
        try:
            os.unlink(new_data / name)
        except FileNotFoundError:
            pass
    names = sorted(os.listdir(new_data))
    for name in names:
        src, dst = new_data / name, out / name
        try:
            os.rename(src, dst)
        except OSError:
            subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True,
                           capture_output=True)
    overlayfmt.shadow(out, ours)
    st = new_data.stat()
    os.chown(out, st.st_uid, st.st_gid)
    os.chmod(out, stat.S_IMODE(st.st_mode))
    # the one sync: the data (upgrade_datadir, told sync=False, synced none of it) and the
    # moves durable before the journal moves on
    os.sync()


def _empty(out: Path) -> None:
    """Undo a half-written upper (it was empty)."""
    if not out.is_dir():
        return
    for e in os.scandir(out):
        if e.is_dir(follow_symlinks=False):
            _rmtree_quiet(e.path)
        else:
            try:
                os.unlink(e.path)
            except OSError:
                pass


__all__ = ["maybe_upgrade", "find_pg", "write_upper", "host_tools", "ImagePg", "ContainerTools",
           "overlay_snapshot", "tmpfs_scratch"]
