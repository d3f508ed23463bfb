"""One journaled runner for every kind of transaction (architecture.md,
principle 12): the upgrade, the rollback, the rehearsal.

:func:`run_journaled` takes the container's lock, finishes or undoes what a
crash left (:func:`recover`), has the caller prepare the steps under the lock,
journals them (BEGIN, durable before any change), applies them in order —
each marked ``applying`` before and ``applied`` with its undo data after,
with a fault point on either side for the crash suites — and times them.  On
a failure it undoes the applied steps in reverse; once a step at or past the
*point of no return* has started, it leaves the rest to be rolled forward by
``recover`` instead.  When every step is applied, the kind's *finisher*
records the outcome in the same database transaction as COMMIT, then does
the post-commit work.

:func:`recover` walks the same journal without the process that wrote it: it
looks the finisher up by the journal's kind in :data:`FINISHERS`, which
transaction.py, rollback.py and rehearsal.py fill at import, so none of them
imports another.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, NotDone
from . import journal as jr
from .steps import Step, Tx, fault, from_journal

if TYPE_CHECKING:
    import sqlite3

    from .ctx import Ctx

Progress = Callable[[str, str, float | None], None]   # (event, text, seconds)


def no_progress(event: str, text: str, seconds: float | None) -> None:
    return None


# -- the finishers -------------------------------------------------------------

@dataclass(frozen=True)
class Finisher:
    """What a kind of run does once all its steps are applied.

    ``record`` writes the outcome (a new generation, say) inside the database
    transaction that marks the journal ``committed``; it must work from the
    journal alone (and an empty :class:`Tx`) when the kind has a point of no
    return, since recovery rolls such a run forward and commits it.
    ``finish`` is the post-commit work: idempotent, redone by ``recover``
    after a crash.  ``keep`` False: the journal rows go once the run ends (a
    rehearsal leaves nothing behind); ``timing`` names the finish's timing.
    """

    record: Callable[[Ctx, jr.Journal, Tx, sqlite3.Connection], None]
    finish: Callable[[Ctx, jr.Journal], None]
    keep: bool = True
    timing: str | None = None


FINISHERS: dict[str, Finisher] = {}


def register(kind: str, finisher: Finisher) -> None:
    FINISHERS[kind] = finisher


def finisher_for(kind: str) -> Finisher:
    try:
        return FINISHERS[kind]
    except KeyError:
        raise NotDone(f"a journal of kind {kind!r} is not known to this volmerge") from None


# -- running -------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """A run ready to start: its steps and what the journal records of it."""

    steps: tuple[Step, ...]
    from_image: str
    to_image: str
    plan: dict[str, Any]                    # journaled as is
    tx: Tx = field(default_factory=Tx)
    jid: str = field(default_factory=jr.new_id)
    point_of_no_return: str | None = None   # kind of the first step rolled forward once begun


@dataclass(frozen=True)
class Finished:
    id: str
    prepared: Prepared

    @property
    def tx(self) -> Tx:
        return self.prepared.tx


class Failed(NotDone):
    """A step failed: the run was undone (``undone``), or it stopped past its
    point of no return and is left for ``recover`` to roll forward.  The
    caller words the error; ``cause`` is the step's own."""

    def __init__(self, reason: str, cause: BaseException, prepared: Prepared, *,
                 undone: bool) -> None:
        super().__init__(reason)
        self.reason, self.cause, self.prepared, self.undone = reason, cause, prepared, undone


@contextlib.contextmanager
def locked(ctx: Ctx, container: str) -> Iterator[None]:
    """The container's transaction lock (one upgrade, rollback or rehearsal
    at a time); a second is refused at once (exit 2)."""
    lock = ctx.store.lock(f"upgrade-{container}", blocking=False)
    try:
        lock.__enter__()
    except BlockingIOError:
        raise Conflict(f"another upgrade, rollback or rehearsal of {container} is running") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def run_journaled(ctx: Ctx, kind: str, container: str, prepare: Callable[[], Prepared], *,
                  progress: Progress = no_progress, members: tuple[str, ...] = ()) -> Finished:
    """Run a transaction of ``kind`` on ``container`` (see the module's doc).
    ``members``: the other containers a run spanning several changes (their
    locks are taken too, their pending journals finished first; the plan
    lists them as ``members`` for recovery).  Raises :class:`Failed` after
    undoing it (or leaving it to ``recover``); KeyboardInterrupt and
    SystemExit are re-raised once it is undone."""
    fin = finisher_for(kind)
    names = tuple(dict.fromkeys((container, *members)))
    with contextlib.ExitStack() as held:
        for name in names:
            held.enter_context(locked(ctx, name))
        for name in names:
            recover(ctx, container=name, locked=True, held=names)
        p = prepare()
        steps = list(p.steps)
        no_return = next((i for i, s in enumerate(steps) if s.kind == p.point_of_no_return), None)
        t0 = time.monotonic()
        journal = jr.Journal.begin(ctx.store, container=container, kind=kind,
                                   from_image=p.from_image, to_image=p.to_image, plan=p.plan,
                                   steps=[s.to_journal() for s in steps], jid=p.jid,
                                   no_return=no_return)
        progress("begin", f"journal {journal.id}: plan recorded", time.monotonic() - t0)
        _apply_all(ctx, kind, journal, steps, p, no_return, progress)
        commit(ctx, journal, p.tx, fin)
        fault(f"{kind}.committed")  # for kind rollback the volumes' point of the same name comes first
        close(ctx, journal, fin, p.tx)
        return Finished(journal.id, p)


def _apply_all(ctx: Ctx, kind: str, journal: jr.Journal, steps: list[Step], p: Prepared,
               no_return: int | None, progress: Progress) -> None:
    tx = p.tx
    applied: list[tuple[int, Step, dict[str, Any]]] = []
    t_down = None
    try:
        for i, step in enumerate(steps):
            fault(f"{kind}.before-{step.kind}")
            journal.step_state(i, "applying")
            t0 = time.monotonic()
            if step.kind == "stop" and t_down is None:
                t_down = t0
            applied.append((i, step, {}))
            undo = step.apply(ctx, tx)
            applied[-1] = (i, step, undo)
            journal.step_state(i, "applied", undo)
            dt = time.monotonic() - t0
            tx.timings[step.kind if step.kind not in tx.timings else f"{step.kind}#{i}"] = dt
            progress("step", step.describe(), dt)
            fault(f"{kind}.after-{step.kind}")
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        progress("fail", reason, None)
        if no_return is not None and applied and applied[-1][0] >= no_return:
            journal.finish("begun", error=reason, timings=tx.timings)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise Failed(reason, exc, p, undone=False) from None
        t0 = time.monotonic()
        undo_steps(ctx, journal, kind, applied, progress)
        tx.timings["rollback"] = time.monotonic() - t0
        fin = finisher_for(kind)
        if fin.keep:
            journal.finish("rolled-back", error=reason, timings=tx.timings,
                           report={"volumes": tx.reports})
        else:
            journal.discard()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise Failed(reason, exc, p, undone=True) from None
    if t_down is not None:
        tx.timings["downtime"] = time.monotonic() - t_down


def undo_steps(ctx: Ctx, journal: jr.Journal, kind: str,
               applied: list[tuple[int, Step, dict[str, Any]]],
               progress: Progress = no_progress) -> None:
    """Undo ``applied`` in reverse, stopping at the first failure: undoing a
    later step (restarting the old container) on top of a failed earlier
    undo (its volume not rolled back) would mix generations.  The journal
    stays ``begun`` and the next recover continues from there.

    The old containers start again last, once every volume is back, in the
    order they were stopped: in a stack's journal the application stopped
    after its database would otherwise start again on the database the new
    release had migrated, before the database's own undo (found by
    ``volmerge demo --stack``).  A recover computes the same order from the
    steps not yet undone."""
    restarts = [a for a in applied if a[1].restarts_on_undo]
    others = [a for a in reversed(applied) if not a[1].restarts_on_undo]
    for i, step, undo in (*others, *restarts):
        try:
            fault(f"{kind}.undo-{step.kind}")
            did = step.undo(ctx, undo)
        except Exception as exc:
            raise NotDone(f"rollback stopped at '{step.describe()}': {exc}; "
                          "run `volmerge recover` to finish it") from None
        journal.step_state(i, "undone")
        if did:
            progress("undo", f"undo: {step.describe()}", None)


def undo_journaled(ctx: Ctx, journal: jr.Journal, kind: str) -> None:
    """Undo every step of ``journal`` that started, as journaled."""
    applied = [(s.idx, from_journal(s.kind, s.args), s.undo) for s in journal.steps() if s.started]
    undo_steps(ctx, journal, kind, applied)


def roll_forward(ctx: Ctx, journal: jr.Journal, kind: str) -> None:
    """A crash past the point of no return: apply the steps not yet applied
    (each ``apply`` tolerates its own earlier, interrupted attempt)."""
    tx = Tx()
    for s in journal.steps():
        if s.state == "applied":
            continue
        step = from_journal(s.kind, s.args)
        journal.step_state(s.idx, "applying")
        journal.step_state(s.idx, "applied", step.apply(ctx, tx))


def commit(ctx: Ctx, journal: jr.Journal, tx: Tx, fin: Finisher) -> None:
    with ctx.store.transaction() as db:
        fin.record(ctx, journal, tx, db)
        journal.finish("committed", timings=tx.timings, report={"volumes": tx.reports}, db=db)


def close(ctx: Ctx, journal: jr.Journal, fin: Finisher, tx: Tx | None = None) -> None:
    """The post-commit work, then the journal is ``done`` (or forgotten)."""
    t0 = time.monotonic()
    fin.finish(ctx, journal)
    if tx is not None and fin.timing:
        tx.timings[fin.timing] = time.monotonic() - t0
    if fin.keep:
        journal.done()
    else:
        journal.discard()


# -- recovery ------------------------------------------------------------------

def recover(ctx: Ctx, container: str | None = None, *, locked: bool = False,
            held: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Finish or undo every transaction a crash interrupted (``volmerge
    recover``, and the start of every command that opens the store: cheap
    when nothing is pending).  A journal still ``begun`` is undone step by
    step in reverse, or rolled forward once past its point of no return; a
    ``committed`` one gets its post-commit work redone.  A transaction whose
    lock is still held belongs to a live process and is left alone.  With
    ``container``, the journals that change it (their own, or a stack's it
    is a member of); ``locked``: the caller holds that container's lock,
    ``held``: the other locks it holds."""
    done = []
    mine = {container, *held} if locked else set(held)
    for row in jr.pending(ctx.store):
        names = jr.members(row)
        if container is not None and container not in names:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for name in names:
                    if name not in mine:
                        stack.enter_context(ctx.store.lock(f"upgrade-{name}", blocking=False))
            except BlockingIOError:
                continue  # a live transaction
            done.append(_recover_one(ctx, row))
    return done


def _recover_one(ctx: Ctx, row: sqlite3.Row) -> dict[str, Any]:
    import json

    j = jr.Journal(ctx.store, row["id"])
    kind = row["kind"]
    out = {"id": row["id"], "container": row["container"]}
    try:
        fin = finisher_for(kind)
    except NotDone as exc:  # written by a newer volmerge: leave it to that one
        return {**out, "action": "failed", "error": str(exc)}
    if row["state"] == "committed":
        close(ctx, j, fin)
        return {**out, "action": "finished commit"}
    no_return = row["no_return"]
    if no_return is not None and any(s.started for s in j.steps() if s.idx >= no_return):
        roll_forward(ctx, j, kind)
        commit(ctx, j, Tx(), fin)
        close(ctx, j, fin)
        return {**out, "action": "rolled forward"}
    try:
        undo_journaled(ctx, j, kind)
    except Exception as exc:  # leave it begun: the next recover tries again
        return {**out, "action": "failed", "error": str(exc)}
    if fin.keep:
        prev = json.loads(row["timings"]) if row["timings"] else {}
        j.finish("rolled-back", error="interrupted; undone by recover", timings=prev)
    else:
        j.discard()
    return {**out, "action": "rolled back"}
