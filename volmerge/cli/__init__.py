"""The ``volmerge`` command line.  Docker-like verbs (docs/architecture.md, the CLI contract).

The typer application lives in root.py.  ``volmerge run`` with ordinary
arguments takes a fast path (fastrun.py) that parses them without importing
typer: container start-up is what users time.  Help, errors and every other
command go through typer.  Library errors become a one-line message on
stderr and their exit code: 2 bad input, 1 not done (rolled back), anything
else is a bug.
"""

from __future__ import annotations

import os
import sys


def __getattr__(name: str) -> object:
    if name == "app":
        from .root import app

        return app
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process; its exit code.  Nothing is left
    running after it returns (no helper process, no socket)."""
    args = sys.argv[1:] if argv is None else list(argv)
    from volmerge.errors import exit_code_of, known_error_types

    try:
        if os.environ.get("VOLMERGE_LOG"):
            from volmerge.runtime import diag

            diag.configure()
        from .fastrun import fast_run

        code = fast_run(args)
        if code is not None:
            return code
        from .root import run

        run(args)
    except SystemExit as exc:
        status = exc.code
        return status if isinstance(status, int) else (0 if status is None else 1)
    except known_error_types() as exc:
        sys.stderr.write(f"volmerge: error: {exc}\n")
        return exit_code_of(exc)
    except KeyboardInterrupt:
        sys.stderr.write("volmerge: interrupted\n")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


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
