"""Executors run an OCI bundle: ``runc`` when installed, ``builtin`` always."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from .base import Executor

NAMES = ("runc", "builtin")


def _installed(program: str) -> bool:
    """``shutil.which(program) is not None`` without importing shutil (and the
    zlib, bz2 and lzma modules it brings) on the run path."""
    for d in os.get_exec_path():
        path = os.path.join(d, program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return True
    return False


def default_name() -> str:
    return "runc" if _installed("runc") else "builtin"


def get(name: str | None, root: Path) -> Executor:
    """The executor called ``name`` (None: runc when present, else builtin)."""
    name = name or default_name()
    if name == "runc":
        if not _installed("runc"):
            raise BadInput("runtime runc is not installed (use --runtime builtin)")
        from .runc import RuncExecutor

        return RuncExecutor(root)
    if name == "builtin":
        from .builtin import BuiltinExecutor

        return BuiltinExecutor(root)
    raise BadInput(f"unknown runtime {name!r}: expected one of {', '.join(NAMES)}")
