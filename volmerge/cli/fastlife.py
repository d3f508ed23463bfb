"""``volmerge start|stop|restart`` without typer, as ``run`` (fastrun.py).

Importing typer and building its commands cost a ``stop`` or a ``start``
about 90 ms, more than the rest of the command.  This module reads
``[--root PATH] start|stop|restart [-t SECONDS] NAME...`` and calls what
the engine's start, stop and restart (the typer commands', cmd_container.py)
delegate to: the lifecycle of the same records and bundles, printing each
name as they do.  Anything else — ``--help``, ``start --attach``, an
unknown option, a missing or odd value, no name — returns None and the
caller goes through typer, which prints the help or the error.
tests/volmerge/cli/test_fastlife.py holds the two parsers equal.

A ``start`` or ``restart`` forks its container's supervisor first thing
(runtime.superspawn.Forked): it gets ready on the other core while this
process imports the lifecycle and prepares the run, and no second interpreter
starts.
"""

from __future__ import annotations

from . import fastargs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on this path
if TYPE_CHECKING:
    from typing import Any

VERBS = ("start", "stop", "restart")
#: the timeout options of stop and restart (start has none on this path)
TIME_OPTIONS = ("-t", "--time", "--timeout")


def parse(args: list[str]) -> tuple[str | None, str, list[str], float] | None:
    """(root, verb, names, timeout) of a plain start/stop/restart argument
    list, or None when typer should read it."""
    head = fastargs.command(args, VERBS)
    if head is None:
        return None
    root, verb, rest = head
    table = {} if verb == "start" else {n: ("timeout", "float") for n in TIME_OPTIONS}
    got = fastargs.options(rest, table, interspersed=True)  # --attach and --help: typer's
    if got is None:
        return None
    names, kw = got
    timeout = kw.get("timeout", 10.0)
    if not names or any(not n for n in names) or not 0 <= timeout < float("inf"):
        return None  # typer's command says what is wrong with the timeout
    return root, verb, names, timeout


def fast_lifecycle(args: list[str]) -> int | None:
    """Start, stop or restart the containers when ``args`` is a plain such
    command; else None."""
    parsed = parse(args)
    if parsed is None:
        return None
    root, verb, names, timeout = parsed
    # dataclasses (of the records a start reads) imports inspect but calls it only
    # for a class without a docstring
    fastargs.defer_import("inspect")
    spare = None if verb == "stop" else _fork_supervisor(root)
    try:
        life = _lifecycle(root)
        life.spare = spare  # the first detached start takes it
        all_known(life.get, names)
        for ref in names:
            if verb == "start":
                life.start(ref)
            elif verb == "stop":
                life.stop(ref, timeout, autoremove=True)  # a --rm one goes, as Docker's
            else:
                life.restart(ref, timeout)
            print(ref)
    finally:
        if spare is not None:
            spare.cancel()  # unused (the container ran already, an error): it ends
    return 0


def _lifecycle(root: str | None) -> Any:
    """What the engine's start, stop and restart call (runtime.lifecycle),
    built as the engine builds it (the context's records and bundles, its
    supervisor factory) without the engine: runtime.containers and the
    image store it registers with cost a cold ``start`` ~5-20 ms of imports."""
    from volmerge.context import FACTORY, supervised
    from volmerge.runtime.lifecycle import Lifecycle

    from .state import Globals

    parts = supervised(Globals(root=root).store())
    return Lifecycle(parts.records, parts.bundles, FACTORY)


def _fork_supervisor(root: str | None) -> Any:
    """A supervisor for the first container to start, forked now: before
    this process imports the engine, opens the store or takes a lock, with
    no thread but this one (runtime.superspawn.Forked).  None when the
    system refuses a fork (a spawned one is used instead)."""
    from volmerge.context import FACTORY
    from volmerge.runtime.superspawn import Forked

    try:
        return Forked(root, FACTORY)
    except OSError:
        return None


def all_known(get: Any, refs: list[str], *, stopped: bool = False) -> None:
    """Look every container up before acting on any (``get``: the engine's
    or the lifecycle's): a missing one (or, with ``stopped``, a live one)
    is bad input, and bad input changes nothing.  One container needs no
    second look-up.  (The typer commands' too, cmd_container.py.)"""
    if len(refs) < 2:
        return
    for ref in refs:
        c = get(ref)
        if stopped and c.live:
            from volmerge.runtime.errors import Conflict

            raise Conflict(f"container {c.name} is {c.state}: stop it first or use --force")
