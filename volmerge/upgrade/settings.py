"""The upgrade's settings from the environment, read in one way.

Each is a whole number of MiB in a ``VOLMERGE_*_MB`` variable (0 turns its
behaviour off); :func:`check` reads them all when an upgrade is planned, so
a bad value exits 2 before anything changes, not half-way through the
steps that use it.  The strategies take the values as arguments (pgmajor's
``small_bytes``) and never read the environment themselves.
"""

from __future__ import annotations

import os

from ..errors import BadInput

#: a live layer larger than this many MiB is not copied: the old container
#: is paused while the copy is made (~0.1 s per 30 MiB here), so its service
#: would freeze for seconds; such a volume is merged at the switch instead
SERVING_COPY_MAX_MB = 256
#: user data (MiB) below which dump and restore is quicker than pg_upgrade's
#: fixed cost (its --check and several server starts): measured on a 2-core
#: VM, the two paths cross between 120k and 400k pgbench rows (16-60 MiB)
PG_UPGRADE_MIN_MB = 32


def mib(name: str, default_mb: int) -> int:
    """Bytes of ``name``'s whole number of MiB, or of ``default_mb`` when it
    is unset or empty; BadInput for anything else (a sign, a unit, a
    fraction, more than nine digits)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_mb << 20
    if not raw.isdigit() or len(raw) > 9:
        raise BadInput(f"{name}={raw!r}: not a whole number of MiB")
    return int(raw) << 20


def serving_copy_max() -> int:
    """Bytes of a busy volume's live layer up to which it is copied while
    the old version serves (volmerge/upgrade/servingcopy.py)."""
    return mib("VOLMERGE_SERVING_COPY_MAX_MB", SERVING_COPY_MAX_MB)


def pg_upgrade_min() -> int:
    """Bytes of a PostgreSQL cluster's user data under which a major upgrade
    dumps and restores instead of running pg_upgrade (volmerge/upgrade/pgdata.py)."""
    return mib("VOLMERGE_PG_UPGRADE_MIN_MB", PG_UPGRADE_MIN_MB)


def check() -> None:
    """Read every setting: BadInput for the first bad one."""
    serving_copy_max()
    pg_upgrade_min()
