"""The ``volmerge`` command line.  Docker-like verbs (docs/architecture.md, the CLI contract).

The typer application lives in root.py.  ``volmerge run`` with ordinary
arguments takes a fast path (fastrun.py) that parses them without importing
typer: container start-up is what users time; so do ``start``, ``stop`` and
``restart`` (fastlife.py), and ``pull`` (fastpull.py).  Help, errors and every other
command go through typer.  Library errors become a one-line message on
stderr and their exit code: 2 bad input, 1 not done (rolled back), anything
else is a bug.
"""

from __future__ import annotations

import os
import sys
import time


def __getattr__(name: str) -> object:
    if name == "app":
        from .root import app

        return app
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process; its exit code.  Nothing is left
    running after it returns (no helper process, no socket)."""
    args = sys.argv[1:] if argv is None else list(argv)
    started = time.time()
    from volmerge.errors import exit_code_of, known_error_types

    try:
        if os.environ.get("VOLMERGE_LOG"):
            from volmerge.runtime import diag

            diag.configure()
        from .fastrun import fast_run

        code = fast_run(args)
        if code is None:
            from .fastlife import fast_lifecycle  # start, stop, restart: the same idea

            code = fast_lifecycle(args)
        if code is None:
            from .fastpull import fast_pull  # a warm pull is mostly start-up

            code = fast_pull(args)
        if code is not None:
            return code
        from .root import run

        run(args)
    except SystemExit as exc:
        status = exc.code
        return status if isinstance(status, int) else (0 if status is None else 1)
    except known_error_types() as exc:
        if _no_space(exc, args, started):
            return 1
        sys.stderr.write(f"volmerge: error: {exc}\n")
        return exit_code_of(exc)
    except KeyboardInterrupt:
        sys.stderr.write("volmerge: interrupted\n")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - only a full disk; anything else is a bug
        if not _no_space(exc, args, started):
            raise
        return 1
    return 0


def _no_space(exc: BaseException, args: list[str], started: float) -> bool:
    """A full disk, however it surfaced (an OSError, SQLite, a tool's
    message): reported as one line naming the file system (runtime.diskspace)
    for exit 1 - every step already rolls back on any error.  Whether it was.
    When the step did not know how much it needed, the upgrade this command
    began tells (its plan's estimate, upgrade/space.py)."""
    from volmerge.runtime import diskspace

    if (getattr(exc, "details", None) or {}).get("where"):
        return False  # its own line names the place (a database server's disk)
    if not diskspace.is_no_space(exc, _root_of(args)):
        return False
    root = _root_of(args)
    pending, needed = _journal_of(root, started)
    if not isinstance(exc, diskspace.NoSpace):
        details = getattr(exc, "details", None) or {}
        need = details.get("needed") if isinstance(details.get("needed"), int) else needed
        exc = diskspace.no_space(_path_of(exc) or root, needed=need)
    msg = str(exc)
    if pending:  # the roll back itself could not write
        msg = msg.replace("; rolled back: free space and run the command again",
                          "; the roll back is not finished: free space, and the next command "
                          "(or `volmerge recover`) finishes it")
    sys.stderr.write(f"volmerge: error: {msg}\n")
    return True


def _journal_of(root: str, started: float) -> tuple[bool, int | None]:
    """Whether an upgrade or rollback is left ``begun`` or ``committed``, and
    the space the plan of the journal this command began (since ``started``)
    estimated.  Read only: the disk is full; every command opening the store
    recovers a pending journal."""
    import json
    import sqlite3

    try:
        from pathlib import Path

        conn = sqlite3.connect(Path(root, "state.db").absolute().as_uri() + "?mode=ro", uri=True)
        try:
            pending = conn.execute("SELECT 1 FROM upgrade_journal WHERE state IN ('begun', "
                                   "'committed') LIMIT 1").fetchone() is not None
            row = conn.execute("SELECT plan FROM upgrade_journal WHERE started >= ? "
                               "ORDER BY started DESC LIMIT 1", (started,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False, None
    try:
        needed = json.loads(row[0])["space"]["needed"] if row else None
    except (ValueError, TypeError, KeyError):
        needed = None
    return pending, needed if isinstance(needed, int) else None


def _path_of(exc: BaseException | None) -> str | None:
    """The file an OSError in the chain names (the write that found no room)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and isinstance(exc.filename, (str, bytes)):
            return os.fsdecode(exc.filename)
        exc = exc.__cause__ or exc.__context__
    return None


def _root_of(args: list[str]) -> str:
    """The store root of this command (``--root``, VOLMERGE_ROOT, the default)."""
    for i, a in enumerate(args):  # global options come before the command
        if a == "--root" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--root="):
            return a[len("--root="):]
        if not a.startswith("-"):
            break
    from volmerge.runtime.storeroot import DEFAULT_ROOT

    return os.environ.get("VOLMERGE_ROOT") or DEFAULT_ROOT


def entry() -> None:
    code = main()
    if "volmerge.cli.root" not in sys.modules:  # the typer-free run path ran
        _leave(code)
    sys.exit(code)


def _leave(code: int) -> None:
    """End the typer-free run path (fastrun.py) without the interpreter's
    teardown, which nobody waits for: every commit that must survive a power
    loss is on disk already (store.transaction), locks and held directories
    are file descriptors that the kernel closes, and the path registers no
    atexit work.  What it skips is SQLite's checkpoint when the last
    connection closes (a write and two fsyncs) and the deletion of the
    write-ahead log that the next command would create again (a directory
    fsync): about a fifth of a ``run --rm`` on this machine's disk."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)
