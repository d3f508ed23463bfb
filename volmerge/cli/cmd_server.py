"""`volmerge server ...`: the warm command server of a store (server.py):
status, start, stop.

Commands start it on their own (VOLMERGE_SERVER=0 turns that off); these
commands are for scripts, benchmarks and the curious.
"""

from __future__ import annotations

import os
import time

import typer

from .common import emit_json, g

server_app = typer.Typer(
    help="The warm command server that makes every command start fast: status, start, stop.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _root(ctx: typer.Context) -> str:
    from runtime.store import default_root

    return os.path.abspath(g(ctx).root or str(default_root()))


def _describe(info: dict) -> str:
    up = time.time() - info["started"]
    return (f"command server pid {info['pid']} for {info['root']}: up {up:.0f} s, "
            f"{info['served']} commands served, exits after {info['idle_timeout']:.0f} s idle")


@server_app.command("status")
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Whether a command server runs for this store (exit 1 when none does)."""
    from .server import control

    root = _root(ctx)
    info = control(root, "status")
    if json_out:
        emit_json({"running": info is not None, **(info or {"root": root})})
    elif info is None:
        typer.echo(f"no command server for {root}")
    else:
        typer.echo(_describe(info))
    if info is None:
        raise typer.Exit(1)


@server_app.command("start")
def start(ctx: typer.Context) -> None:
    """Start the command server for this store now (commands otherwise start
    it after the first one that finds none); waits until it answers."""
    from runtime.store import Store

    from .server import control, start_background

    root = _root(ctx)
    Store(root).close()  # create the store if there is none yet
    info = control(root, "status")
    if info is None:
        start_background(root)
        deadline = time.monotonic() + 30
        while info is None and time.monotonic() < deadline:
            time.sleep(0.02)
            info = control(root, "status")
    if info is None:
        from runtime.errors import RuntimeFault

        raise RuntimeFault(f"the command server for {root} did not start")
    typer.echo(_describe(info))


@server_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the command server for this store: it takes no new command and
    exits when the running ones have finished (their clients get their exit
    codes).  One still starting is waited for and stopped.  Nothing to do
    is not an error."""
    from .server import control

    from .server import starting

    root = _root(ctx)
    info = control(root, "stop")
    deadline = time.monotonic() + 30
    while info is None and starting(root) and time.monotonic() < deadline:
        time.sleep(0.02)  # one is starting (it holds the lock, not yet listening)
        info = control(root, "stop")
    typer.echo(f"stopped command server pid {info['pid']}" if info else f"no command server for {root}")
