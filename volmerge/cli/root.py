"""The typer application: global options and every command group.

Each command group lives in its own module and registers itself on ``app``
(commands_registry.py).
"""

from __future__ import annotations

import typer

from .state import Globals

app = typer.Typer(
    name="volmerge",
    help="Upgrade stateful containers without losing data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from volmerge import __version__

        print(f"volmerge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    root: str | None = typer.Option(
        None, "--root", envvar="VOLMERGE_ROOT", metavar="PATH",
        help="Store root (default /var/lib/volmerge).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Log to stderr what volmerge does and what it deliberately"
        " ignores (also VOLMERGE_LOG=debug|info|warning)."
    ),
) -> None:
    """Upgrade stateful containers without losing data."""
    if debug:
        from volmerge.runtime import diag

        diag.configure("debug")
    ctx.obj = Globals(root=root)


def _register() -> None:
    from . import commands_registry

    commands_registry.register_all(app)


_register()

_command = None


def command():
    """The click command typer builds from ``app`` (typer rebuilds it on
    every call, ~12 ms): built once per process."""
    global _command
    if _command is None:
        _command = typer.main.get_command(app)
    return _command


def run(args: list[str]) -> None:
    command()(args=args, prog_name="volmerge", standalone_mode=True)
