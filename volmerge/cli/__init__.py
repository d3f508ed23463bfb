"""The ``volmerge`` command line.  Docker-like verbs (DESIGN.md, CLI contract).

Each command group lives in its own module and registers itself on ``app``.
Library errors become a one-line message on stderr and their exit code:
2 bad input, 1 not done (rolled back), anything else is a bug.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from .common import Globals

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
    root: Optional[str] = typer.Option(
        None, "--root", envvar="VOLMERGE_ROOT", metavar="PATH",
        help="Store root (default /var/lib/volmerge).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Upgrade stateful containers without losing data."""
    ctx.obj = Globals(root=root)


def _register() -> None:
    from . import commands_registry

    commands_registry.register_all(app)


_register()


def main(argv: list[str] | None = None) -> int:
    from volmerge.errors import exit_code_of, known_error_types

    try:
        app(args=argv, prog_name="volmerge", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
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
    sys.exit(main())
