"""The typer application: global options and every command group.

Each command group lives in its own module and registers itself on ``app``
(commands_registry.py).
"""

from __future__ import annotations

import sys

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
    """Run the typer command for ``args``.  A usage error (an unknown option
    or command, a missing or malformed argument) is bad input like any
    other: one line on stderr naming the command's help, exit 2 (click
    would print the usage, a hint and the error on three lines)."""
    # typer (pinned below 0.29) carries its own click; its errors are these
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        code = command()(args=args, prog_name="volmerge", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a group alone: its help
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "volmerge"
        sys.stderr.write(f"volmerge: error: {_one_line(exc.format_message())} "
                         f"(see '{where} --help')\n")
        raise SystemExit(exc.exit_code) from None
    except ClickException as exc:
        sys.stderr.write(f"volmerge: error: {_one_line(exc.format_message())}\n")
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        raise KeyboardInterrupt from None
    if isinstance(code, int) and code:  # typer.Exit(code), ctx.exit(code)
        raise SystemExit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())
