"""``volmerge run`` without typer: container start-up is what users time.

Importing typer (and the pydantic it brings) and letting it convert run's
thirty options cost about 90 ms, three times what runc itself needs to start
a container.  This module reads ``[--root PATH] run [OPTIONS] IMAGE
[COMMAND...]`` by the table below and hands the same keyword arguments the
typer command receives to the same code (runopts.py).

It only takes argument lists it reads exactly as typer would: anything else
— ``--help``, an unknown or malformed option, a missing value, an integer
that does not parse, short options run together — returns None and the
caller goes through typer, which prints the help or the error.  A test
holds this table equal to the typer command's options and checks, on
generated argument lists, that both parsers give the same arguments.
"""

from __future__ import annotations

from . import fastargs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

# option spelling -> (keyword, kind); kinds: fastargs.KINDS
OPTIONS: dict[str, tuple[str, str]] = {}


def _opt(kind: str, key: str, *names: str) -> None:
    for n in names:
        OPTIONS[n] = (key, kind)


_opt("flag", "detach", "-d", "--detach")
_opt("flag", "interactive", "-i", "--interactive")
_opt("flag", "tty", "-t", "--tty")
_opt("flag", "rm", "--rm")
_opt("flag", "no_healthcheck", "--no-healthcheck")
_opt("flag", "read_only", "--read-only")
_opt("str", "name", "--name")
_opt("str", "workdir", "-w", "--workdir")
_opt("str", "user", "-u", "--user")
_opt("str", "entrypoint", "--entrypoint")
_opt("str", "network", "--network")
_opt("str", "ip", "--ip")
_opt("str", "hostname", "--hostname")
_opt("str", "health_cmd", "--health-cmd")
_opt("str", "health_interval", "--health-interval")
_opt("str", "health_timeout", "--health-timeout")
_opt("str", "health_start_period", "--health-start-period")
_opt("str", "health_http", "--health-http")
_opt("str", "restart", "--restart")
_opt("str", "runtime", "--runtime")
_opt("str", "memory", "-m", "--memory")
_opt("int", "health_retries", "--health-retries")
_opt("int", "health_tcp", "--health-tcp")
_opt("int", "pids_limit", "--pids-limit")
_opt("list", "env", "-e", "--env")
_opt("list", "env_file", "--env-file")
_opt("list", "volume", "-v", "--volume")
_opt("list", "tmpfs", "--tmpfs")
_opt("list", "publish", "-p", "--publish")
_opt("list", "socket_activate", "--socket-activate")
_opt("list", "label", "-l", "--label")
_opt("list", "dns", "--dns")
_opt("list", "dns_search", "--dns-search")
_opt("list", "add_host", "--add-host")

KEYS: dict[str, str] = {key: kind for key, kind in OPTIONS.values()}


def parse(args: list[str]) -> tuple[str | None, str, list[str], dict[str, Any]] | None:
    """(root, image, command, keyword arguments) of a ``run`` argument list,
    or None when typer should read it."""
    head = fastargs.command(args, ("run",))
    if head is None:
        return None
    root, _, rest = head
    got = fastargs.options(rest, OPTIONS, interspersed=False)  # the image ends the options
    if got is None or not got[0]:
        return None
    positional, given = got
    kw: dict[str, Any] = {key: (False if kind == "flag" else None) for key, kind in KEYS.items()}
    kw.update(given)
    return root, positional[0], positional[1:], kw


def fast_run(args: list[str]) -> int | None:
    """Run the container when ``args`` is a plain ``run``; else None."""
    parsed = parse(args)
    if parsed is None:
        return None
    root, image, command, kw = parsed
    fastargs.defer_import("ipaddress")
    from .runopts import run_container, run_options
    from .state import Globals

    opts = run_options(image, command or None, **kw)
    return run_container(Globals(root=root).store(), opts)
