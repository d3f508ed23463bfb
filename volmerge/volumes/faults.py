"""Fault injection: ``VOLMERGE_FAULT=<step>`` makes the process SIGKILL
itself when it reaches the named step, so tests can prove that a crash at any
step leaves a volume in the state before or the state after.

``STEPS`` lists every step per operation; the crash tests iterate over it, and
a test fails if a listed step is never reached (the list cannot rot).
"""

from __future__ import annotations

import os
import signal

STEPS: dict[str, tuple[str, ...]] = {
    "create": ("create.layers-built", "create.layers-in-pool", "create.committed"),
    "snapshot": (
        "snapshot.layer-made",
        "snapshot.unmounted",
        "snapshot.committed",
        "snapshot.remounted",
    ),
    "rollback": ("rollback.layer-made", "rollback.committed", "rollback.applied"),
    "rollback-keep": (
        "rollback.layer-made",
        "rollback.journal-written",
        "rollback.applied-one",
        "rollback.applied",
    ),
    "clone": ("clone.layer-made", "clone.committed"),
    "compact": (
        "compact.squashed",
        "compact.in-pool",
        "compact.committed",
        "compact.collected",
    ),
    "remove": ("remove.committed",),
}


_SEEN: dict[str, int] = {}


def point(step: str) -> None:
    """Die here, right now, if the environment asks for it
    (``VOLMERGE_FAULT=STEP``, or ``STEP#N``: at its N-th time in this process,
    for an operation an upgrade does twice, such as a snapshot)."""
    want = os.environ.get("VOLMERGE_FAULT")
    if not want:
        return
    name, _, nth = want.partition("#")
    if name != step:
        return
    _SEEN[step] = seen = _SEEN.get(step, 0) + 1
    if seen == (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
