"""Reconciliation: the record of a container whose owner died, made true.

A live state (running, paused, restarting) is only true while the owner
that recorded it (a supervisor, or the CLI process of a foreground run)
lives.  When it died without recording the exit (killed, crashed, power
loss), what is left of the run is killed and torn down and the exit is
recorded, with an error that says so.  The engine checks the owner on every
``get`` and ``list`` (one ``/proc`` read) and imports this module only when
one is dead, so ``ps`` always tells the truth at no cost when all is well.
"""

from __future__ import annotations

import os
import signal
import time

from . import diag
from .records import Container, ContainerRecords, prestarted, proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .bundle import Bundles

ERROR = "owner process died; container reconciled"


def needs_reconcile(c: Container) -> bool:
    """A live state, or a start prepared ahead (Lifecycle.prestart), whose
    owner is gone."""
    return (c.live or prestarted(c)) and not c.owner_alive()


def reconcile_one(records: ContainerRecords, bundles: Bundles, c: Container) -> Container:
    """``c`` as it is once a dead owner's run is undone (under the
    container's lock; another process may have done it meanwhile)."""
    if not needs_reconcile(c):
        return c
    with records.store.lock("container-" + c.id):
        cur = records.lookup(c.id)
        if not needs_reconcile(cur):
            return cur
        if prestarted(cur):  # never started: nothing ran, nothing to record but the undo
            bundles.teardown(cur)
            records.update(cur.id, owner_pid=None, owner_start=None)
            return records.lookup(cur.id)
        killed = False
        if cur.pid and proc_start_time(cur.pid):
            try:
                bundles.executor_for(cur).unpause(cur.id)
            except Exception as exc:  # noqa: BLE001 - the kill below is what matters
                diag.ignored(__name__, f"unpausing {cur.name} before the kill", exc)
            try:
                os.kill(cur.pid, signal.SIGKILL)
                killed = True
            except OSError:
                pass
        bundles.teardown(cur)
        records.update(cur.id, state="exited", exit_code=137 if killed else cur.exit_code,
                       finished_at=time.time(), health=None, error=ERROR, pid=None)
        return records.lookup(cur.id)


def reconcile_all(records: ContainerRecords, bundles: Bundles) -> list[str]:
    """Reconcile every container whose owner died; their names."""
    fixed = []
    for c in records.all():
        if needs_reconcile(c):
            reconcile_one(records, bundles, c)
            fixed.append(c.name)
    return fixed
