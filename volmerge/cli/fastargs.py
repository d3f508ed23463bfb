"""The argument reader of the typer-free commands (fastrun.py, fastlife.py,
fastpull.py).

Each of them reads only what it is sure typer would read the same way and
hands anything else back (None), so typer prints the help or the error:
tests/volmerge/cli/test_fastrun.py, test_fastlife.py and test_fastpull.py
hold each table equal to its typer command.  What they share is here: the
global ``--root`` before the command, and the options after it (a flag; a
value inline after ``=`` or as the next argument, never one that starts
with ``-``; ``--`` ending the options).  No typing, no re: this is on the
path of a cold ``run``.  :func:`defer_import` lets them import modules that
their dependencies import but seldom use only when used.
"""

from __future__ import annotations

import os
from types import ModuleType  # imported on this path anyway (enum, re)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

#: how an option's value is read: "flag" (no value), "str", "int", "float", "list" (repeatable)
KINDS = ("flag", "str", "int", "float", "list")


def command(args: list[str], verbs: tuple[str, ...]) -> tuple[str | None, str, list[str]] | None:
    """(root, verb, the arguments after it) when ``args`` is ``[--root PATH]
    VERB ...`` with VERB one of ``verbs``; None otherwise (another global
    option, another command, an empty root)."""
    root = os.environ.get("VOLMERGE_ROOT") or None
    i = 0
    while i < len(args) and args[i] not in verbs:
        a = args[i]
        if a == "--root" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            root, i = args[i + 1], i + 2
        elif a.startswith("--root=") and len(a) > len("--root="):
            root, i = a[len("--root="):], i + 1
        else:
            return None
    if i >= len(args):
        return None
    return root, args[i], args[i + 1:]


def options(rest: list[str], table: dict[str, tuple[str, str]], *,
            interspersed: bool) -> tuple[list[str], dict[str, Any]] | None:
    """(positional arguments, {key: value} of the options given) of ``rest``;
    ``table`` maps each option's spelling to (key, kind).  ``interspersed``:
    options may follow positional arguments (``stop NAME -t 1``); otherwise
    the first positional argument ends the options (``run IMAGE CMD -x``).
    None for anything the table does not read exactly: an unknown option
    (``--help`` among them), short options run together, a flag given a
    value, a missing value or one that starts with ``-``, a number that is
    not one."""
    positional: list[str] = []
    kw: dict[str, Any] = {}
    j = 0
    while j < len(rest):
        a = rest[j]
        if a == "--":
            positional += rest[j + 1:]
            break
        if not a.startswith("-") or a == "-":
            if not interspersed:
                positional += rest[j:]
                break
            positional.append(a)
            j += 1
            continue
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        spec = table.get(name)
        if spec is None:
            return None
        key, kind = spec
        if kind == "flag":
            if eq:
                return None
            kw[key], j = True, j + 1
            continue
        if eq:
            value, j = inline, j + 1
        elif j + 1 < len(rest) and not rest[j + 1].startswith("-"):
            value, j = rest[j + 1], j + 2
        else:
            return None  # a missing value, or one typer may read otherwise
        try:
            kw[key] = (int(value) if kind == "int" else float(value) if kind == "float"
                       else [*kw.get(key, ()), value] if kind == "list" else value)
        except ValueError:
            return None
    return positional, kw


def defer_import(name: str) -> None:
    """Execute module ``name`` when one of its attributes is first used
    rather than when it is imported.

    For ``ipaddress`` (~0.9 ms, run): ``urllib.parse``, which pathlib imports, needs it
    only to check a bracketed host in a URL; a run with an address or a DNS
    server (or on a network) imports it for real.  Python 3.11's
    importlib.util.LazyLoader cannot do this: the import statement reads
    the module's ``__spec__``, which makes it load at once."""
    import sys

    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


class _Deferred(ModuleType):
    """A module stand-in: its first missing attribute imports the real module
    and copies its namespace in, so every name bound to the stand-in works."""

    __spec__ = None  # what the import statement reads: no load, not initializing

    def __getattr__(self, attr: str) -> Any:
        import importlib
        import sys

        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)
