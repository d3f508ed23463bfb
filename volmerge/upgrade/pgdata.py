"""PostgreSQL data directories across major versions (issue 6 item 7).

A volume whose root holds a PostgreSQL data directory (``PG_VERSION``)
cannot be file-merged: the new major version cannot read the old one's
files.  ``maybe_upgrade`` is called by the upgrade's merge before the tree
merge; it returns None when the volume is not such a data directory (or the
major version does not change), else it writes the new data directory into
``out`` (an overlay upper over ``ours``) and returns a tree-merge-shaped
report.

How: each image runs *its own* binaries.  Two temporary containers (network
none, no ports, the image's unprivileged user, an idle shell as their
process) get one store tmpdir bind-mounted at the *same* path as on the
host, so that the paths strategies.sql.pgmajor hands to its runners mean the
same thing on both sides: the old server's clone of the data, the new data
directory, the unix sockets psycopg connects to from the host, the dumps.
The dump, restore and verification themselves are
strategies.sql.pgmajor.dump_replay_verify (one implementation, also behind
the library-level ``upgrade_datadir``); this module adds the images, the
containers, the configuration and the overlay upper.
A runner execs the argv in the right container through the engine.
``ours`` is only read (copied into the tmpdir); the new data directory is
then moved into ``out`` as an overlay upper: top-level directories opaque,
top-level entries the new version lacks whited out.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotDone


def _rmtree_quiet(path: str | os.PathLike[str]) -> None:
    """Best-effort removal of a work tree holding a clone of a container's
    data (iterative: shutil.rmtree recurses, and its ignore_errors does not
    cover RecursionError)."""
    import contextlib

    from volmerge.runtime.fsutil import rmtree

    with contextlib.suppress(OSError):
        rmtree(path)

OPAQUE = "trusted.overlay.opaque"
# Written by the temporary servers, meaningless to the real one.
SCRATCH_FILES = ("server.log", "postmaster.opts", "postmaster.pid")
# The client tools the dump and replay need next to the server binary.
TOOLS = ("postgres", "pg_ctl", "initdb", "pg_dump", "pg_dumpall", "pg_restore")
CONF_FILES_VERBATIM = ("pg_hba.conf", "pg_ident.conf")
UNIX_PATH_MAX = 107
_VERSION_RE = re.compile(rb"postgres \(PostgreSQL\) (\d+)(?:\.(\d+))?")


def pg_version(path: Path) -> str | None:
    try:
        return (Path(path) / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


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

    def __init__(self, ctx: Any, pg: ImagePg, workdir: Path, role: str, image: Any) -> None:
        self.ctx, self.pg, self.workdir, self.role = ctx, pg, workdir, role
        self.image = image
        self.id: str | None = None
        self.uid_gid: tuple[int, int] = (999, 999)

    def start(self) -> None:
        from volmerge.runtime.options import HealthConfig, Mount, RunOptions

        cfg = (self.image.config or {}).get("config") or {}
        mounts = [Mount("bind", str(self.workdir), str(self.workdir))]
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

    def runner(self, fake_bindir: str, timer: Timer) -> Any:
        """A pgtemp Runner: argv[0] under ``fake_bindir`` (a host directory
        that only satisfies pgmajor's checks) runs the image's own binary;
        output captured through files in the workdir."""
        from volmerge.runtime.executors.base import Stdio

        def run(argv: Sequence[str]) -> subprocess.CompletedProcess:
            argv = list(argv)
            if argv and argv[0].startswith(fake_bindir + "/"):
                argv[0] = self.pg.bindir + argv[0][len(fake_bindir):]
            tool = os.path.basename(argv[0]) if argv else "?"
            if tool == "pg_ctl":
                tool += " " + argv[-1]
            base = self.workdir / f".out-{secrets.token_hex(4)}"
            t0 = time.monotonic()
            try:
                with open(f"{base}.1", "w+b") as out, open(f"{base}.2", "w+b") as err:
                    rc = self.ctx.engine.exec(self.id, argv, workdir="/",
                                              stdio=Stdio(subprocess.DEVNULL, out, err))
                    out.seek(0)
                    err.seek(0)
                    o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
            finally:
                for s in (".1", ".2"):
                    try:
                        os.unlink(f"{base}{s}")
                    except FileNotFoundError:
                        pass
                timer.add(f"{tool} ({self.pg.major})", time.monotonic() - t0)
            return subprocess.CompletedProcess(argv, rc, o, e)

        run.uid_gid = self.uid_gid  # type: ignore[attr-defined]
        return run


# -- the hook ---------------------------------------------------------------------

def maybe_upgrade(ctx: Any, *, old_image: Any, new_image: Any, volume: str, target: str,
                  ours: Path, theirs: Path | None, out: Path, dry_run: bool) -> dict[str, Any] | None:
    """None: not a PostgreSQL data directory changing major version.  Else
    the new data directory is in ``out`` (nothing written in a dry run) and
    the report says what was (would be) replayed."""
    data_ver = pg_version(ours)
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
    """Count what would be replayed: the old server on a copy of the data."""
    from volmerge.strategies.sql.pgmajor import clone_datadir
    from volmerge.strategies.sql.pgtemp import PgServer, give

    timer = Timer()
    head = f"PostgreSQL {old.major} -> {new.major}"
    work = _workdir(ctx)
    box = TempContainer(ctx, old, work, "old", old_image)
    dbs: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        box.start()
        timer.add("container start", time.monotonic() - t0)
        fake = _fake_bindir(work, "bin-old")
        run = box.runner(fake, timer)
        clone = str(work / "old-data")
        t0 = time.monotonic()
        clone_datadir(str(ours), clone)
        give(clone, run)
        timer.add("copy data", time.monotonic() - t0)
        srv = PgServer(fake, clone, str(work / "old-sock"), run, port=5433)
        srv.start()
        try:
            dbs = _count(srv)
        finally:
            srv.stop()
    except NotDone as exc:
        note = f"{head}: dump and replay with verification (counts unavailable: {exc})"
        return _report(_entry(note), {"old_version": old.major, "new_version": new.major,
                                      "dry_run": True, "databases": []})
    finally:
        box.remove()
        _rmtree_quiet(work)
    rows = sum(t["rows"] for d in dbs for t in d["tables"])
    tables = sum(len(d["tables"]) for d in dbs)
    note = (f"{head}: would replay {len(dbs)} databases, {tables} tables, {rows} rows "
            f"(dump with {old.major}'s pg_dump, initdb and load with {new.major}'s, verified)")
    return _report(_entry(note), {"old_version": old.major, "new_version": new.major,
                                  "dry_run": True, "databases": dbs, "timings": timer.steps})


def _count(srv: Any) -> list[dict[str, Any]]:
    import psycopg

    out = []
    with psycopg.connect(srv.url("postgres")) as c:
        names = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn AND "
                                         "datname <> 'template1' ORDER BY datname").fetchall()]
    for db in names:
        with psycopg.connect(srv.url(db)) as c:
            tabs = c.execute(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
                "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                "ORDER BY 1").fetchall()
            tables = [{"table": t, "rows": c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]}
                      for (t,) in tabs]
        out.append({"database": db, "tables": tables})
    return out


def _fake_bindir(work: Path, name: str) -> str:
    """A host directory standing for the image's bin dir: pgmajor checks that
    ``postgres`` exists there; the runner maps it to the real one."""
    d = work / name
    d.mkdir()
    for t in TOOLS:
        (d / t).touch()
    return str(d)


def _convert(ctx: Any, old: ImagePg, new: ImagePg, old_image: Any, new_image: Any,
             ours: Path, out: Path) -> dict[str, Any]:
    from volmerge.strategies.sql.pgmajor import dump_replay_verify

    timer = Timer()
    t_all = time.monotonic()
    work = _workdir(ctx)
    new_data = work / "new-data"
    boxes = [TempContainer(ctx, old, work, "old", old_image),
             TempContainer(ctx, new, work, "new", new_image)]
    written = False
    try:
        t0 = time.monotonic()
        for b in boxes:
            b.start()
        timer.add("containers start", time.monotonic() - t0)
        old_fake, new_fake = _fake_bindir(work, "bin-old"), _fake_bindir(work, "bin-new")
        old_run, new_run = boxes[0].runner(old_fake, timer), boxes[1].runner(new_fake, timer)
        t0 = time.monotonic()
        dbs = dump_replay_verify(ours, new_data, work, old_fake, new_fake, old_run, new_run,
                                 timing=timer.add)
        timer.add("dump, replay, verify (total)", time.monotonic() - t0)
        t0 = time.monotonic()
        carried = carry_config(ours, new_data, new_run, new_fake)
        timer.add("config", time.monotonic() - t0)
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
            except Exception:  # noqa: BLE001 - the other one and the dir still go
                pass
        _rmtree_quiet(work)
        timer.add("cleanup", time.monotonic() - t0)
    rows = sum(t["rows"] for d in dbs for t in d["tables"])
    tables = sum(len(d["tables"]) for d in dbs)
    seqs = sum(len(d["sequences"]) for d in dbs)
    note = (f"PostgreSQL {old.major} -> {new.major}: {len(dbs)} databases, {tables} tables, "
            f"{rows} rows, {seqs} sequences replayed, verified")
    entry = _entry(note)
    if carried:
        entry["notes"].append(carried)
    timer.add("total", time.monotonic() - t_all)
    return _report(entry, {"old_version": old.major, "new_version": new.major,
                           "new_server": new.full, "tables": tables, "rows": rows,
                           "databases": dbs, "timings": timer.steps})


# -- configuration ---------------------------------------------------------------

_SETTING_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.$-]*)\s*=?\s*('(?:[^'\\]|''|\\.)*'|[^\s#]*)")


def settings(text: str) -> dict[str, str]:
    """Active ``name = value`` lines of a postgresql.conf (last one wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _SETTING_RE.match(line)
        if m and m.group(2) != "":
            out[m.group(1).lower()] = m.group(2)
    return out


def merge_conf(old_text: str, new_text: str, known: set[str] | None,
               old_major: str) -> tuple[str, list[str], list[str]]:
    """The new version's file plus the old file's active settings that differ
    and that the new version knows (extension settings with a dot always)."""
    new_set = settings(new_text)
    carried, dropped, lines = [], [], []
    for name, value in settings(old_text).items():
        if name.startswith("include"):
            dropped.append(name)
            continue
        if known is not None and name not in known and "." not in name:
            dropped.append(name)
            continue
        if new_set.get(name) == value:
            continue
        carried.append(name)
        lines.append(f"{name} = {value}")
    if not lines:
        return new_text, carried, dropped
    text = new_text.rstrip("\n") + (f"\n\n# Carried from the PostgreSQL {old_major} data directory "
                                    "by volmerge (pg-major upgrade)\n") + "\n".join(lines) + "\n"
    return text, carried, dropped


def _replace_file(path: Path, text: str) -> None:
    st = path.stat()
    tmp = path.with_name(path.name + ".volmerge")
    tmp.write_text(text)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.replace(tmp, path)


def carry_config(ours: Path, new_data: Path, new_run: Any, fake_bindir: str) -> str:
    """Carry the operator's configuration into the new data directory:
    pg_hba.conf and pg_ident.conf verbatim, postgresql.conf and
    postgresql.auto.conf settings the new version knows; then have the new
    server parse the result (``postgres -C``), NotDone if it refuses."""
    old_major = pg_version(ours) or "?"
    for name in CONF_FILES_VERBATIM:
        src, dst = ours / name, new_data / name
        if src.is_file() and dst.is_file():
            _replace_file(dst, src.read_text(errors="replace"))
    known: set[str] | None = None
    proc = new_run([fake_bindir + "/postgres", "--describe-config"])
    if proc.returncode == 0:
        known = {ln.split("\t", 1)[0].lower() for ln in proc.stdout.splitlines() if ln.strip()}
    carried: list[str] = []
    dropped: list[str] = []
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        src, dst = ours / name, new_data / name
        if not src.is_file() or not dst.is_file():
            continue
        text, c, d = merge_conf(src.read_text(errors="replace"), dst.read_text(errors="replace"),
                                known, old_major)
        carried += c
        dropped += d
        if c:
            _replace_file(dst, text)
    check = new_run([fake_bindir + "/postgres", "-D", str(new_data), "-C", "data_directory"])
    if check.returncode != 0:
        msg = (check.stderr or check.stdout).strip().splitlines()
        raise NotDone("the new server refuses the carried configuration: "
                      + (msg[-1] if msg else f"exit {check.returncode}"))
    note = f"configuration carried: pg_hba.conf, pg_ident.conf, settings {', '.join(carried) or 'none'}"
    if dropped:
        note += f"; not carried (unknown to the new version): {', '.join(dropped)}"
    return note


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
        if dst.is_dir() and not dst.is_symlink():
            os.setxattr(dst, OPAQUE, b"y", follow_symlinks=False)
    have = set(names)
    for name in sorted(os.listdir(ours)):
        if name not in have:
            os.mknod(out / name, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    st = new_data.stat()
    os.chown(out, st.st_uid, st.st_gid)
    os.chmod(out, stat.S_IMODE(st.st_mode))
    os.sync()  # the moved data files are durable before the journal moves on


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


__all__ = ["maybe_upgrade", "pg_version", "find_pg", "write_upper", "merge_conf", "settings",
           "carry_config", "ImagePg"]
