"""Executors run an OCI bundle: ``runc`` when installed, ``builtin`` always."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BadInput
from .base import Executor

NAMES = ("runc", "builtin")


def default_name() -> str:
    return "runc" if shutil.which("runc") else "builtin"


def get(name: str | None, root: Path) -> Executor:
    """The executor called ``name`` (None: runc when present, else builtin)."""
    name = name or default_name()
    if name == "runc":
        if not shutil.which("runc"):
            raise BadInput("runtime runc is not installed (use --runtime builtin)")
        from .runc import RuncExecutor

        return RuncExecutor(root)
    if name == "builtin":
        from .builtin import BuiltinExecutor

        return BuiltinExecutor(root)
    raise BadInput(f"unknown runtime {name!r}: expected one of {', '.join(NAMES)}")
