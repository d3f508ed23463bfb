"""The fast path of a major upgrade: ``pg_upgrade`` itself, checked first.

``pg_upgrade`` rewrites only the system catalogs (schema dump and restore)
and copies the relation files as they are, so it runs at the speed of a
file copy instead of a row-by-row reload.  It needs both versions'
programs side by side, run by the same user: ``old_bin`` is the old
installation's bin directory as the *new* tools see it (on a host, the old
bin directory; in a container of the new image, wrappers that run the old
image's programs, volmerge.upgrade.pgwrap).

Every step here raises :class:`Refused` when the fast path cannot be taken
(the old programs do not run, ``pg_upgrade --check`` objects, a collation
would sort differently under the new libraries): the caller then falls back
to dump and restore, which rebuilds everything and has none of these
limits.  The old data is only ever a throwaway clone (``--copy`` or
``--clone`` leave it readable; ``--link`` is never used: the verification
reads the old cluster after the upgrade).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
from dataclasses import dataclass
from typing import Any

from volmerge.strategies.errors import NotDone

from .pgtemp import Tools, check, give, private_hba

#: FICLONE (linux/fs.h): the reflink probe for --clone
_FICLONE = 0x40049409
#: ports of pg_upgrade's own servers (on private sockets: never on TCP)
OLD_PORT, NEW_PORT = 50432, 50433
#: settings pg_upgrade's servers need besides its own: no /dev/shm in a container
_SERVER_OPTS = "-c dynamic_shared_memory_type=mmap -c hba_file={hba}"


@dataclass(frozen=True)
class OldBeside:
    """The old installation's programs where the new ones run, as the same
    user: what ``pg_upgrade`` needs.  ``tools`` runs them; ``bindir`` is
    their directory as the new programs see it (``pg_upgrade -b``)."""

    tools: Tools
    bindir: str


class Refused(NotDone):
    """The fast path cannot be taken here; the message says why."""


@dataclass(frozen=True)
class ClusterInfo:
    """What the new cluster must be initialised with to take the old one's files."""

    superuser: str
    encoding: str
    collate: str
    ctype: str
    checksums: bool
    wal_segment: str  # "16MB"


_INFO_SQL = (
    "SELECT {cols} FROM pg_database WHERE datname = 'template1';\n")
_INFO_COLS = ("(SELECT rolname FROM pg_authid WHERE oid = 10)", "pg_encoding_to_char(encoding)",
              "datcollate", "datctype", "current_setting('data_checksums')",
              "current_setting('wal_segment_size')")


def cluster_info(tools: Tools, datadir: str) -> ClusterInfo:
    """The old cluster's bootstrap superuser, encoding, locale, checksums and
    WAL segment size, read in single-user mode (no role needed to log in;
    a crashed snapshot is recovered and shut down cleanly, as pg_upgrade
    requires).  Values travel hex-encoded: a hostile role name cannot
    confuse the parse.  Writes a shutdown checkpoint: call it on a copy.
    Also the first run of the old programs: Refused when they do not run."""
    cols = ", ".join(f"encode(convert_to(({c})::text, 'UTF8'), 'hex') AS c{i}"
                     for i, c in enumerate(_INFO_COLS))
    proc = tools.run("postgres", "--single", "-D", datadir, "-c", "hba_file=/dev/null",
                     "template1", input=_INFO_SQL.format(cols=cols))
    if proc.returncode != 0:
        raise Refused(f"the old server did not run here: {_reason(proc.stderr or proc.stdout)}")
    vals = dict(re.findall(r'^\s*\d+: c(\d) = "([0-9a-f]*)"\t', proc.stdout, re.M))
    if len(vals) != len(_INFO_COLS):
        raise Refused(f"{datadir}: could not read the cluster's settings in single-user mode")
    v = [bytes.fromhex(vals[str(i)]).decode("utf-8", "replace") for i in range(len(_INFO_COLS))]
    return ClusterInfo(v[0], v[1], v[2], v[3], v[4] == "on", v[5])


def initdb(new: Tools, datadir: str, info: ClusterInfo) -> None:
    """The new cluster, shaped as pg_upgrade requires: the same superuser,
    encoding, locale, checksums and WAL segment size."""
    os.makedirs(datadir, mode=0o700, exist_ok=True)
    give(datadir, new.user)
    seg = re.fullmatch(r"(\d+)MB", info.wal_segment)
    args = ["-D", datadir, "-U", info.superuser, "--auth=trust", "-E", info.encoding,
            f"--locale={info.collate}", "--no-sync"]
    if info.ctype != info.collate:
        args.append(f"--lc-ctype={info.ctype}")
    if info.checksums:
        args.append("--data-checksums")
    if seg and seg.group(1) != "16":
        args.append(f"--wal-segsize={seg.group(1)}")
    check(new.run("initdb", *args), "initdb")


def clone_supported(directory: str) -> bool:
    """Whether files in ``directory`` can be reflinked (``pg_upgrade --clone``)."""
    a, b = os.path.join(directory, ".clone-probe-a"), os.path.join(directory, ".clone-probe-b")
    try:
        with open(a, "wb") as f:
            f.write(b"x" * 4096)
        with open(a, "rb") as src, open(b, "wb") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        return True
    except OSError:
        return False
    finally:
        for p in (a, b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def in_dir(tools: Tools, cwd: str) -> Tools:
    """``tools`` running in ``cwd`` (pg_upgrade wants a writable working
    directory); tools without a working directory of their own as they are."""
    if dataclasses.is_dataclass(tools) and any(f.name == "cwd" for f in dataclasses.fields(tools)):
        return dataclasses.replace(tools, cwd=cwd)
    return tools


def run(new: Tools, old_bin: str, old_data: str, new_data: str, info: ClusterInfo, work: str,
        *, mode: str, check_only: bool, jobs: int = 1, sockdir: str | None = None,
        cwd: str | None = None) -> str:
    """``pg_upgrade`` (``--check`` when ``check_only``) from ``old_data``
    into the initialised ``new_data``, in ``mode`` (``--copy`` or
    ``--clone``), the servers on a private socket that trusts only it.
    ``sockdir`` (default ``work/pgu-sock``): where its servers' sockets
    are, or where ``--check`` finds the old server already running;
    ``cwd`` (default ``work/pgu-cwd``): where it runs (two runs side by
    side each get their own).  Returns pg_upgrade's output; Refused with its reason on a failure."""
    if mode not in ("--copy", "--clone"):
        raise ValueError(mode)
    sock, cwd = sockdir or os.path.join(work, "pgu-sock"), cwd or os.path.join(work, "pgu-cwd")
    for d in (sock, cwd):
        os.makedirs(d, mode=0o700, exist_ok=True)
    hba = private_hba(sock)
    for d in (sock, cwd):
        give(d, new.user)
    opts = _SERVER_OPTS.format(hba=hba)
    args = ["-b", old_bin, "-d", old_data, "-D", new_data, "-U", info.superuser, "-s", sock,
            "-p", str(OLD_PORT), "-P", str(NEW_PORT), "-o", opts, "-O", opts, "--no-sync",
            "-j", str(max(1, jobs)), mode]
    if check_only:
        args.insert(0, "--check")
    proc = in_dir(new, cwd).run("pg_upgrade", *args)
    if proc.returncode != 0:
        what = "pg_upgrade --check" if check_only else "pg_upgrade"
        full = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines()
                if "No space left on device" in ln or "Disk quota exceeded" in ln]
        if full:  # not a refusal: no other path would fit either
            raise NotDone(f"{what}: {full[0][:300]}")
        raise Refused(f"{what}: {failure(proc.stdout + chr(10) + proc.stderr)}")
    return proc.stdout


def failure(output: str) -> str:
    """The reason in pg_upgrade's output: the check that failed and the
    explanation under it (or its last line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.endswith("fatal") or ln.endswith("failed"):
            head = re.sub(r"\s{2,}.*$", "", ln)
            return f"{head}: {lines[i + 1]}" if i + 1 < len(lines) else head
    return lines[-1][:300] if lines else "failed"


def _reason(text: str) -> str:
    """The server's own words: its first error line (LOG lines skipped), without the prefix."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    errs = [re.sub(r"^.*?\b(FATAL|ERROR|PANIC|LOG):\s*", "", ln) for i, ln in enumerate(lines)
            if re.search(r"\b(FATAL|ERROR|PANIC):", ln) or (  # what made the file wrong
                i + 1 < len(lines) and "contains errors" in lines[i + 1])]
    return (errs[0] if errs else lines[-1] if lines else "no output")[:300]


_COLL_DB = """
SELECT datname FROM pg_database
 WHERE datallowconn AND datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid)
"""
_COLL_IDX = """
SELECT DISTINCT c.collname FROM pg_index i CROSS JOIN LATERAL unnest(i.indcollation) k(coll)
  JOIN pg_collation c ON c.oid = k.coll
 WHERE k.coll <> 0 AND c.collversion IS DISTINCT FROM pg_collation_actual_version(c.oid)
"""


def collation_risk(new_conn: Any, db: str) -> str | None:
    """Why the indexes of ``db``, carried as files, might not match what the
    new server's libraries sort (None: nothing at risk).  The versions the
    old cluster recorded are compared with the new libraries' own (C and
    POSIX have none and never change); a difference means the files
    pg_upgrade copied could be out of order, where dump and restore
    rebuilds every index."""
    try:
        row = new_conn.execute(_COLL_DB + " AND datname = %s", (db,)).fetchone()
        if row is not None:
            return f"database {db}: its collation's version changed with the new image's libraries"
        colls = [r[0] for r in new_conn.execute(_COLL_IDX).fetchall()]
    except Exception as exc:  # noqa: BLE001 - an older server lacks the functions: refuse
        return f"database {db}: collation versions could not be checked ({exc})"
    if colls:
        return (f"database {db}: collation {', '.join(colls)} used by an index changed version "
                "with the new image's libraries")
    return None


__all__ = ["OldBeside", "Refused", "ClusterInfo", "cluster_info", "initdb", "clone_supported", "run",
           "failure", "collation_risk", "in_dir"]
