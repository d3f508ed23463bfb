"""``upgrade --rehearse``: the whole upgrade against clones, then thrown away.

The steps are the upgrade's own (build.py), aimed at O(1) clones of the
volumes and at a copy of the successor on no network, with no published
ports; the runner (runner.py) journals and walks them like any transaction,
so a crash mid-rehearsal is cleaned up by ``recover``.  The rehearsal's
finisher undoes every step once all passed — it records nothing and keeps
no journal — and a failed rehearsal is undone the same way.  The live
container keeps serving throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotDone
from . import journal as jr
from . import runner
from .build import Rehearsal, build_steps
from .merge import summary
from .plan import UpgradeOptions, make_plan
from .runner import Failed, Prepared, Progress, no_progress
from .steps import Tx

if TYPE_CHECKING:
    import sqlite3

    from .ctx import Ctx


def rehearse(ctx: Ctx, opts: UpgradeOptions, progress: Progress = no_progress) -> dict[str, Any]:
    """The report of a rehearsal that passed; NotDone (exit 1) carrying the
    same report (``result``) when it failed.  Bad input stays bad input."""
    c = ctx.engine.get(opts.container)
    found: dict[str, Any] = {}

    def prep() -> Prepared:
        p = prepare(ctx, opts)
        found["plan"] = {k: v for k, v in p.plan.items() if k != "id"}
        return p

    try:
        done = runner.run_journaled(ctx, "rehearsal", c.name, prep, progress=progress)
    except Failed as exc:
        if getattr(exc.cause, "exit_code", 3) == 2:
            raise exc.cause from None
        tx = exc.prepared.tx
        tx.timings["cleanup"] = tx.timings.pop("rollback", 0.0)
        reports: dict[str, Any] = dict(tx.reports)
        details = getattr(exc.cause, "details", {}) or {}
        if "report" in details:
            reports["_conflicts"] = details["report"]
        result = _result(False, exc.reason, found["plan"], reports, tx)
        raise NotDone(f"rehearsal of the upgrade of {c.name} to {opts.to_image} failed: "
                      f"{exc.reason}", result=result) from None
    return _result(True, "", found["plan"], done.tx.reports, done.tx)


def prepare(ctx: Ctx, opts: UpgradeOptions) -> Prepared:
    """Under the container's lock: the upgrade's steps aimed at clones and a
    copy (build.py); a compose stack's rehearsal chains several."""
    plan = make_plan(ctx, opts)
    jid = jr.new_id()
    tx = Tx(new_image=ctx.images.get(plan.new_image),
            old_image=ctx.images.get(plan.old_image_id), policy=plan.policy)
    steps = build_steps(ctx, plan, jid, 0, rehearsal=Rehearsal.new(ctx, plan))
    return Prepared(steps=tuple(steps), from_image=plan.old_image, to_image=opts.to_image,
                    plan={**plan.to_json(), "id": jid}, tx=tx, jid=jid)


def _result(ok: bool, reason: str, plan: dict[str, Any], reports: dict[str, Any],
            tx: Tx) -> dict[str, Any]:
    return {"ok": ok, "reason": reason, "plan": plan, "volumes": reports, "timings": tx.timings,
            "summary": summary({k: v for k, v in reports.items() if not k.startswith("_")})}


def _record(ctx: Ctx, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    """A rehearsal changes nothing to record."""


def _throw_away(ctx: Ctx, journal: jr.Journal) -> None:
    """Every step undone as journaled: the copy of the container removed, the
    clones dropped.  A failure stops here and ``recover`` finishes it."""
    runner.undo_journaled(ctx, journal, "rehearsal")


FINISHER = runner.Finisher(record=_record, finish=_throw_away, keep=False, timing="cleanup")
runner.register("rehearsal", FINISHER)
