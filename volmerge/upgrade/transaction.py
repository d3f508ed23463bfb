"""The upgrade as one transaction, and its preview.

1. lock the container; plan (plan.py) and build the steps (build.py)
2. journal BEGIN with the plan and the steps (durable before any change)
3. while the old version serves (staging.py): snapshot the volumes (paused
   for the swap only), merge against that snapshot into staged layers (SQL
   replay happens inside the merge, through the ``sql`` strategy), keep the
   old container as a generation and record the successor
4. the switch: stop; snapshot the volumes; the staged layers become the live
   ones after the paths written since step 3 are merged again; the
   successor takes the address and ports and starts; 5. health check
6. journal COMMIT and the new generation, in one database transaction;
   then the new image's content becomes the merged volumes' base.

The runner (runner.py) does 1-2, walks the steps and, on a failure anywhere
in 3-5, undoes the applied ones in reverse: the old container runs again on
its old layers, address and ports.  This module says what an upgrade is
(its steps, its report) and what its commit records (:data:`FINISHER`).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import NotDone
from . import journal as jr
from . import runner, space
from .build import build_steps, current_gen
from .merge import merge_volume, summary
from .plan import UpgradeOptions, make_plan
from .runner import Failed, Prepared, Progress, no_progress
from .servingcopy import copy_name, drop_copy
from .staging import drop_staged, prep_tag, warm
from .steps import Tx

if TYPE_CHECKING:
    import sqlite3

    from .ctx import Ctx


def upgrade(ctx: Ctx, opts: UpgradeOptions, progress: Progress = no_progress) -> dict[str, Any]:
    """Carry the container to the new image with its data, or put everything
    back.  Returns the report; raises NotDone (exit 1) after a rollback."""
    c = ctx.engine.get(opts.container)
    try:
        done = runner.run_journaled(ctx, "upgrade", c.name, lambda: prepare(ctx, opts, progress),
                                    progress=progress)
    except Failed as exc:
        if not exc.undone:
            raise
        plan, tx = exc.prepared.plan, exc.prepared.tx
        progress("rolled-back", f"{c.name} is back on {plan['from']['image']}",
                 tx.timings.get("rollback"))
        details = getattr(exc.cause, "details", {}) or {}
        raise NotDone(f"upgrade of {c.name} to {plan['to']['image']} rolled back: {exc.reason}",
                      report={"volumes": tx.reports, **details}, timings=tx.timings) from None
    plan, tx = dict(done.prepared.plan), done.tx
    plan.pop("gen")
    jid = plan.pop("id")
    # one source for the number: the row _record wrote (MAX(gen) + 1, which is
    # not the old generation + 1 after a rollback kept the newer data)
    (gen,) = ctx.store.db.execute("SELECT gen FROM generations WHERE journal_id = ?",
                                  (jid,)).fetchone()
    progress("commit", f"{c.name} runs {plan['to']['image']} (generation {gen})", None)
    return {
        "id": done.id, "container": c.name, "from": plan["from"]["image"],
        "to": plan["to"]["image"], "generation": gen, "plan": plan, "volumes": tx.reports,
        "timings": tx.timings, "summary": summary(tx.reports),
    }


def prepare(ctx: Ctx, opts: UpgradeOptions, progress: Progress = no_progress) -> Prepared:
    """Under the container's lock: the plan, the space check, the steps (a
    compose stack's upgrade chains several, upgrade/group.py)."""
    plan = make_plan(ctx, opts)
    space.check(plan.space, plan.container)  # before anything is stopped
    for w in plan.policy_warnings:
        progress("note", f"warning: {w}", None)
    gen = current_gen(ctx, plan.container, plan.container_id, write=True)
    warm()  # what the switch imports, imported while the old version serves
    jid = jr.new_id()
    tx = Tx(new_image=ctx.images.get(plan.new_image),
            old_image=ctx.images.get(plan.old_image_id), policy=plan.policy)
    return Prepared(steps=tuple(build_steps(ctx, plan, jid, gen)), from_image=plan.old_image,
                    to_image=plan.new_image, plan={**plan.to_json(), "id": jid, "gen": gen},
                    tx=tx, jid=jid)


def _record(ctx: Ctx, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    """The new generation, committed with the journal: the old one becomes
    ``previous`` (recorded first if it never was), the successor ``current``
    with the snapshots a rollback returns to."""
    plan = journal.plan()
    name, gen, jid = plan["container"], plan["gen"], plan["id"]
    vols = {v["name"]: {"target": v["target"], "pre": f"upgrade-{jid}-pre",
                        "post": f"upgrade-{jid}-post", "merged": v["theirs"]}
            for v in plan["volumes"]}
    now = time.time()
    have = db.execute("SELECT 1 FROM generations WHERE container = ? AND gen = ?",
                      (name, gen)).fetchone()
    if not have:  # the first generation began when its container was created
        db.execute(
            "INSERT INTO generations (container, gen, container_id, image_id, image_ref,"
            " volumes, journal_id, state, summary, created) VALUES (?, ?, ?, ?, ?, '{}', NULL,"
            " 'previous', NULL, COALESCE((SELECT created FROM containers WHERE id = ?), ?))",
            (name, gen, plan["container_id"], plan["from"]["id"], plan["from"]["image"],
             plan["container_id"], now),
        )
    db.execute("UPDATE generations SET state = 'previous' WHERE container = ? AND state = 'current'",
               (name,))
    new_gen = db.execute("SELECT COALESCE(MAX(gen), 0) + 1 FROM generations WHERE container = ?",
                         (name,)).fetchone()[0]
    db.execute(
        "INSERT INTO generations (container, gen, container_id, image_id, image_ref, volumes,"
        " journal_id, state, summary, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'current', ?, ?)",
        (name, new_gen, tx.new_id, plan["to"]["id"], plan["to"]["image"],
         json.dumps({**vols, "_from_gen": gen}), jid, json.dumps(summary(tx.reports)), now),
    )


def finish_commit(ctx: Ctx, journal: jr.Journal) -> None:
    """After COMMIT: the new image's content becomes each merged volume's base
    for the next upgrade; the serving snapshot's tag, the serving copy and any staged leftover go.  Idempotent; recovery redoes it after a crash."""
    from .imageview import image_root, inside

    plan = journal.plan()
    image = ctx.images.get(plan["to"]["id"])
    with image_root(ctx.store, image) as root:
        for v in plan["volumes"]:
            src = inside(root, v["target"])
            if src is not None:
                ctx.volumes.set_base(v["name"], src)
    # the serving snapshot was only the staged merge's "ours": untagged, its
    # layer is squashed with the next one by the next compaction
    for v in plan["volumes"]:
        if ctx.volumes.exists(v["name"]):
            ctx.volumes.untag(v["name"], {prep_tag(plan["id"])}, compact=False)
        drop_copy(ctx, v["name"], copy_name(plan["id"], v["name"]))
    drop_staged(ctx, plan["id"])


FINISHER = runner.Finisher(record=_record, finish=finish_commit)
runner.register("upgrade", FINISHER)


# -- preview -------------------------------------------------------------------

def preview(ctx: Ctx, opts: UpgradeOptions) -> dict[str, Any]:
    """What the upgrade would do, changing nothing: the plan, the steps, and
    per volume the merge report with a diff of every changed file."""
    from volmerge.runtime import fsutil

    plan = make_plan(ctx, opts)
    new, old = ctx.images.get(plan.new_image), ctx.images.get(plan.old_image_id)
    steps = build_steps(ctx, plan, "preview", current_gen(ctx, plan.container, plan.container_id))
    vols: dict[str, Any] = {}
    files: list[dict[str, Any]] = []
    sql: list[dict[str, Any]] = []
    for v in plan.volumes:
        scratch = ctx.store.tmpdir("preview-")
        try:
            rep = merge_volume(ctx, new, v.name, v.target, at=None, out=scratch / "out",
                               policy=plan.policy, on_conflict=opts.on_conflict, dry_run=True,
                               old_image=old)
        finally:
            fsutil.rmtree(scratch)
        vols[v.name] = rep
        files += [{**f, "volume": v.name, "target": v.target} for f in rep.get("files", [])]
        sql += [{**s, "volume": v.name} for s in rep.get("sql", [])]
    total = summary(vols)
    return {
        "plan": plan.to_json(), "steps": [s.describe() for s in steps], "summary": total,
        "files": files, "sql": sql, "volumes": vols,
        "would_stop": total.get("conflicts", 0) > 0 and opts.on_conflict == "fail",
    }
