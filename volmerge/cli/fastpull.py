"""``volmerge pull`` without typer, as ``run`` (fastrun.py) and ``start`` /
``stop`` (fastlife.py).

Importing typer and building its commands cost a warm pull (every layer
present: one manifest and one config fetched) about 90 ms of its ~0.3 s.
This module reads ``[--root PATH] pull [--platform P] [-q|--quiet]
[--tls-verify B] [--cert-dir D] [--authfile F] REF`` and runs the very body
of the typer command (transfers.pull_command).  Anything else — ``--help``,
an unknown option, a value that starts with ``-``, a missing value, no or
two references — returns None and the caller goes through typer, which
prints the help or the error.  tests/volmerge/cli/test_fastpull.py holds the
two parsers equal.
"""

from __future__ import annotations

import sys

from . import fastargs

#: options that take a value, and the keyword each one sets
VALUE_OPTIONS = {"--platform": "platform", "--tls-verify": "tls_verify",
                 "--cert-dir": "cert_dir", "--authfile": "authfile"}
QUIET_OPTIONS = ("-q", "--quiet")
#: modules a pull imports but rarely uses: loaded on first use (fastargs.defer_import)
DEFERRED = ("zstandard", "anyio")
DEFAULTS: dict[str, object] = {"platform": None, "quiet": False, "tls_verify": "true",
                               "cert_dir": None, "authfile": None}


def parse(args: list[str]) -> tuple[str | None, str, dict[str, object]] | None:
    """(root, reference, keywords of pull_command) of a plain pull argument
    list, or None when typer should read it."""
    head = fastargs.command(args, ("pull",))
    if head is None:
        return None
    root, _, rest = head
    table = {**{n: ("quiet", "flag") for n in QUIET_OPTIONS},
             **{n: (key, "str") for n, key in VALUE_OPTIONS.items()}}
    got = fastargs.options(rest, table, interspersed=True)
    if got is None or len(got[0]) != 1:
        return None
    refs, given = got
    return root, refs[0], {**DEFAULTS, **given}


def fast_pull(args: list[str]) -> int | None:
    """Pull the image when ``args`` is a plain pull command; else None."""
    parsed = parse(args)
    if parsed is None:
        return None
    root, ref, kw = parsed
    # Imported by httpx and httpcore, used by none of a pull's usual work
    # (~8 ms): zstandard (with platform; for a zstd-encoded HTTP body — a
    # zstd layer loads it for real), anyio (for async clients only).  Not
    # inspect, as start defers it: tenacity's and h2's dataclasses without a
    # docstring make dataclasses call inspect.signature at import.
    for name in DEFERRED:
        fastargs.defer_import(name)
    # This process only pulls, and a pull speaks HTTP/1.1 alone (registry.pull);
    # httpcore imports h2 whenever it can (~15 ms).  Marked absent, httpcore
    # keeps its stand-in for HTTP/2 connections, as without its [http2] extra.
    sys.modules.setdefault("h2", None)  # type: ignore[arg-type]
    from .state import Globals
    from .transfers import pull_command

    pull_command(Globals(root=root).store, ref, **kw)  # type: ignore[arg-type]
    return 0
