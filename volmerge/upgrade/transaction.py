"""Running an upgrade: the transaction, the preview and the rehearsal.

1. lock the container; plan
2. journal BEGIN with the plan and the steps (durable before any change)
3. stop; 4. snapshot the volumes; 5. merge into new live layers (SQL replay
   happens inside the merge, through the ``sql`` strategy); 6. keep the old
   container as a generation, create and start the successor on the same
   address and ports; 7. health check
8. journal COMMIT and the new generation, in one database transaction.

A failure anywhere in 3-7 undoes the applied steps in reverse: the old
container runs again on its old layers, address and ports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict, NotDone
from . import journal as jr
from . import steps as st
from .plan import UpgradeOptions, UpgradePlan, make_plan

Progress = Callable[[str, str, float | None], None]   # (event, text, seconds)


def _noop(event: str, text: str, seconds: float | None) -> None:
    return None


@dataclass
class Tx:
    jid: str
    plan: UpgradePlan
    new_image: Any
    policy: Any
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _lock(ctx: Any, container: str) -> Any:
    lock = ctx.store.lock(f"upgrade-{container}", blocking=False)
    try:
        lock.__enter__()
    except BlockingIOError:
        raise Conflict(f"another upgrade or rollback of {container} is running") from None
    return lock


def _current_gen(ctx: Any, name: str, cid: str | None = None, *, write: bool = False) -> int:
    """The generation number of the running container ``cid``.  History
    recorded under this name for another container (one that was removed and
    replaced by hand) is not this container's: it is marked ``orphaned``."""
    gens = jr.generations(ctx.store, name)
    cur = [g for g in gens if g.state == "current"]
    if cur and (cid is None or cur[-1].container_id == cid):
        return cur[-1].gen
    stale = [g for g in gens if g.state != "orphaned"]
    if stale and write:
        with ctx.store.transaction() as db:
            db.execute("UPDATE generations SET state = 'orphaned' WHERE container = ?", (name,))
    return max((g.gen for g in gens), default=0) + 1


def build_steps(ctx: Any, plan: UpgradePlan, jid: str, gen: int) -> list[st.Step]:
    c = ctx.engine.get(plan.container_id)
    opts = plan.options
    pre, post = f"upgrade-{jid}-pre", f"upgrade-{jid}-post"
    steps: list[st.Step] = [
        st.StopContainer(id=c.id, name=c.name, timeout=opts.stop_timeout,
                         running=c.state in ("running", "paused")),
    ]
    for v in plan.volumes:
        steps.append(st.SnapshotVolume(volume=v.name, tag=pre, restore=True))
    for v in plan.volumes:
        if v.theirs:
            steps.append(st.MergeVolume(volume=v.name, target=v.target, at=pre,
                                        image=plan.new_image, on_conflict=opts.on_conflict))
    for v in plan.volumes:
        steps.append(st.SnapshotVolume(volume=v.name, tag=post, restore=False))
    from .plan import volume_mounts

    # Every volume by name, so the successor mounts the same data even where
    # the old container's volumes were made implicitly for image VOLUMEs.
    vmounts = volume_mounts(c)
    others = [m for m in c.options.mounts if m.kind != "volume"]
    new_opts = dataclasses.replace(c.options, image=plan.new_image, name=c.name,
                                   mounts=others + vmounts)
    if plan.health is not None:
        from volmerge.runtime.options import HealthConfig

        new_opts = dataclasses.replace(new_opts, health=HealthConfig(**plan.health))
    steps.append(st.RenameContainer(id=c.id, old_name=c.name, new_name=f"{c.name}.gen{gen}", gen=gen))
    steps.append(st.CreateContainer(name=c.name, image=plan.new_image, old_id=c.id,
                                    options=new_opts.to_json()))
    if new_opts.network not in ("none", "host") and ctx.network.leases(container_id=c.id):
        steps.append(st.TakeOverNetwork(old_id=c.id, old_name=c.name, name=c.name))
    steps.append(st.StartContainer(name=c.name, old_id=c.id, timeout=opts.stop_timeout))
    has_check = plan.health is not None or plan.health_source.startswith("HEALTHCHECK")
    steps.append(st.HealthCheck(check=has_check, source=plan.health_source,
                                timeout=opts.health_timeout))
    return steps


def upgrade(ctx: Any, opts: UpgradeOptions, progress: Progress = _noop) -> dict[str, Any]:
    """Carry the container to the new image with its data, or put everything
    back.  Returns the report; raises NotDone (exit 1) after a rollback."""
    from .recovery import recover

    c = ctx.engine.get(opts.container)
    lock = _lock(ctx, c.name)
    try:
        recover(ctx, container=c.name, locked=True)
        plan = make_plan(ctx, opts)
        for w in plan.policy_warnings:
            progress("note", f"warning: {w}", None)
        gen = _current_gen(ctx, plan.container, plan.container_id, write=True)
        jid = jr.new_id()
        steps = build_steps(ctx, plan, jid, gen)
        tx = Tx(jid=jid, plan=plan, new_image=ctx.images.get(plan.new_image), policy=plan.policy)
        t_begin = time.monotonic()
        journal = jr.Journal.begin(
            ctx.store, container=plan.container, kind="upgrade", from_image=plan.old_image,
            to_image=plan.new_image, plan={**plan.to_json(), "id": jid, "gen": gen},
            steps=[s.to_journal() for s in steps], jid=jid,
        )
        progress("begin", f"journal {journal.id}: plan recorded", time.monotonic() - t_begin)
        applied: list[tuple[int, st.Step, dict[str, Any]]] = []
        t_down = None
        try:
            for i, step in enumerate(steps):
                st.fault(f"upgrade.before-{step.kind}")
                journal.step_state(i, "applying")
                t0 = time.monotonic()
                if step.kind == "stop":
                    t_down = t0
                applied.append((i, step, {}))
                undo = step.apply(ctx, tx)
                applied[-1] = (i, step, undo)
                journal.step_state(i, "applied", undo)
                dt = time.monotonic() - t0
                key = step.kind if step.kind not in tx.timings else f"{step.kind}#{i}"
                tx.timings[key] = dt
                progress("step", step.describe(), dt)
                st.fault(f"upgrade.after-{step.kind}")
        except BaseException as exc:
            reason = str(exc) if str(exc) else type(exc).__name__
            progress("fail", reason, None)
            t0 = time.monotonic()
            undo_steps(ctx, journal, [(i, s, u) for i, s, u in applied], progress)
            tx.timings["rollback"] = time.monotonic() - t0
            journal.finish("rolled-back", error=reason, timings=tx.timings,
                           report={"volumes": tx.reports})
            progress("rolled-back", f"{c.name} is back on {plan.old_image}", tx.timings["rollback"])
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            details = getattr(exc, "details", {}) or {}
            raise NotDone(f"upgrade of {c.name} to {plan.new_image} rolled back: {reason}",
                          report={"volumes": tx.reports, **details}, timings=tx.timings) from None
        if t_down is not None:
            tx.timings["downtime"] = time.monotonic() - t_down
        commit(ctx, journal, tx, gen, steps)
        st.fault("upgrade.committed")
        finish_commit(ctx, journal.id)
        progress("commit", f"{c.name} runs {plan.new_image} (generation {gen + 1})", None)
        return {
            "id": journal.id, "container": c.name, "from": plan.old_image, "to": plan.new_image,
            "generation": gen + 1, "plan": plan.to_json(), "volumes": tx.reports,
            "timings": tx.timings, "summary": _summary(tx.reports),
        }
    finally:
        lock.__exit__(None, None, None)


def undo_steps(ctx: Any, journal: jr.Journal, applied: list[tuple[int, st.Step, dict[str, Any]]],
               progress: Progress = _noop) -> None:
    # Strictly in reverse, stopping at the first failure: undoing a later
    # step (restarting the old container) on top of a failed earlier undo
    # (its volume not rolled back) would mix generations.  The journal stays
    # ``begun`` and the next recover continues from here.
    for i, step, undo in reversed(applied):
        try:
            st.fault(f"upgrade.undo-{step.kind}")
            step.undo(ctx, undo)
        except Exception as exc:
            raise NotDone(f"rollback stopped at '{step.describe()}': {exc}; "
                          "run `volmerge recover` to finish it") from None
        journal.step_state(i, "undone")
        if type(step).undo is not st.Step.undo:
            progress("undo", f"undo: {step.describe()}", None)


def commit(ctx: Any, journal: jr.Journal, tx: Tx, gen: int, steps: list[st.Step]) -> None:
    import json

    plan = tx.plan
    vols = {v.name: {"target": v.target, "pre": f"upgrade-{tx.jid}-pre",
                     "post": f"upgrade-{tx.jid}-post", "merged": v.theirs} for v in plan.volumes}
    now = time.time()
    with ctx.store.transaction() as db:
        have = db.execute("SELECT 1 FROM generations WHERE container = ? AND gen = ?",
                          (plan.container, gen)).fetchone()
        if not have:
            db.execute(
                "INSERT INTO generations (container, gen, container_id, image_id, image_ref,"
                " volumes, journal_id, state, summary, created) VALUES (?, ?, ?, ?, ?, '{}', NULL,"
                " 'previous', NULL, ?)",
                (plan.container, gen, plan.container_id, plan.old_image_id, plan.old_image, now),
            )
        db.execute("UPDATE generations SET state = 'previous' WHERE container = ? AND state = 'current'",
                   (plan.container,))
        new_gen = db.execute("SELECT COALESCE(MAX(gen), 0) + 1 FROM generations WHERE container = ?",
                             (plan.container,)).fetchone()[0]
        db.execute(
            "INSERT INTO generations (container, gen, container_id, image_id, image_ref, volumes,"
            " journal_id, state, summary, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'current', ?, ?)",
            (plan.container, new_gen, tx.new_id, plan.new_image_id, plan.new_image,
             json.dumps({**vols, "_from_gen": gen}), tx.jid,
             json.dumps(_summary(tx.reports)), now),
        )
        journal.finish("committed", timings=tx.timings, report={"volumes": tx.reports}, db=db)


def finish_commit(ctx: Any, jid: str) -> None:
    """After COMMIT: the new image's content becomes each merged volume's base
    for the next upgrade.  Idempotent; recovery redoes it after a crash."""
    import json

    from .imageview import image_root, inside

    j = jr.Journal(ctx.store, jid)
    row = j.row()
    plan = json.loads(row["plan"])
    image = ctx.images.get(plan["to"]["id"])
    with image_root(ctx.store, image) as root:
        for v in plan["volumes"]:
            src = inside(root, v["target"])
            if src is not None:
                ctx.volumes.set_base(v["name"], src)
    with ctx.store.transaction() as db:
        db.execute("UPDATE upgrade_journal SET state = 'done' WHERE id = ? AND state = 'committed'",
                   (jid,))


def _summary(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"conflicts": 0, "files": 0}
    for rep in reports.values():
        s = rep.get("summary", {})
        for k, v in s.items():
            if isinstance(v, int):
                out[k] = out.get(k, 0) + v
        out["files"] += len(rep.get("files", []))
    return out


# -- preview -------------------------------------------------------------------

def preview(ctx: Any, opts: UpgradeOptions) -> dict[str, Any]:
    """What the upgrade would do, changing nothing: the plan, the steps, and
    per volume the merge report with a diff of every changed file."""
    plan = make_plan(ctx, opts)
    new = ctx.images.get(plan.new_image)
    steps = build_steps(ctx, plan, "preview", _current_gen(ctx, plan.container, plan.container_id))
    vols: dict[str, Any] = {}
    files: list[dict[str, Any]] = []
    sql: list[dict[str, Any]] = []
    for v in plan.volumes:
        scratch = ctx.store.tmpdir("preview-")
        try:
            rep = st.merge_volume(ctx, new, v.name, v.target, at=None, out=scratch / "out",
                                  policy=plan.policy, on_conflict=opts.on_conflict, dry_run=True,
                                  old_image=ctx.images.get(plan.old_image_id))
        finally:
            from volmerge.runtime import fsutil

            fsutil.rmtree(scratch)
        vols[v.name] = rep
        for f in rep.get("files", []):
            files.append({**f, "volume": v.name, "target": v.target})
        for s in rep.get("sql", []):
            sql.append({**s, "volume": v.name})
    summary = _summary(vols)
    return {
        "plan": plan.to_json(), "steps": [s.describe() for s in steps], "summary": summary,
        "files": files, "sql": sql, "volumes": vols,
        "would_stop": summary.get("conflicts", 0) > 0 and opts.on_conflict == "fail",
    }


# -- rehearsal -------------------------------------------------------------------

def rehearse(ctx: Any, opts: UpgradeOptions, progress: Progress = _noop) -> dict[str, Any]:
    """The whole upgrade against O(1) clones of the volumes, with the new
    container on an isolated network (no published ports), then thrown away.
    The live container keeps serving."""
    import secrets

    plan = make_plan(ctx, opts)
    c = ctx.engine.get(plan.container_id)
    tag = secrets.token_hex(3)
    new = ctx.images.get(plan.new_image)
    clones: list[str] = []
    timings: dict[str, float] = {}
    reports: dict[str, Any] = {}
    name = f"{c.name}-rehearsal-{tag}"
    ok, reason = False, ""
    created = None
    try:
        t0 = time.monotonic()
        from .plan import volume_mounts

        mounts = [m for m in c.options.mounts if m.kind != "volume"]
        for m in volume_mounts(c):
            clone = f"{m.source}-rehearsal-{tag}"
            # The live volume is left exactly as it is: frozen layers shared,
            # the live layer copied while its container is paused.
            ctx.volumes.clone_live(m.source, clone)
            clones.append(clone)
            mounts.append(dataclasses.replace(m, source=clone))
        timings["clone"] = time.monotonic() - t0
        progress("step", f"cloned {len(clones)} volume(s) (frozen layers shared, live changes copied)",
                 timings["clone"])
        t0 = time.monotonic()
        for v, clone in zip([v for v in plan.volumes], clones):
            if v.theirs:
                reports[v.name] = st.merge_volume(
                    ctx, new, clone, v.target, at=None, out=ctx.volumes.live_upper(clone),
                    policy=plan.policy, on_conflict=opts.on_conflict,
                    old_image=ctx.images.get(plan.old_image_id))
        timings["merge"] = time.monotonic() - t0
        progress("step", "merged into the clones", timings["merge"])
        new_opts = dataclasses.replace(
            c.options, image=plan.new_image, name=name, mounts=mounts, ports=[], network="none",
            ip=None, restart=dataclasses.replace(c.options.restart, name="no"), rm=False,
        )
        if plan.health is not None:
            from volmerge.runtime.options import HealthConfig

            new_opts = dataclasses.replace(new_opts, health=HealthConfig(**plan.health))
        t0 = time.monotonic()
        created = ctx.engine.create(new_opts)
        ctx.engine.start(created.id)
        timings["start"] = time.monotonic() - t0
        progress("step", f"started {name} on an isolated network", timings["start"])
        t0 = time.monotonic()
        has_check = plan.health is not None or plan.health_source.startswith("HEALTHCHECK")
        st.wait_healthy(ctx, created.id, has_check, opts.health_timeout)
        timings["health"] = time.monotonic() - t0
        progress("step", "healthy", timings["health"])
        ok = True
    except NotDone as exc:
        reason = str(exc)
        details = getattr(exc, "details", {}) or {}
        if "report" in details:
            reports["_conflicts"] = details["report"]
    except Exception as exc:
        if getattr(exc, "exit_code", 3) == 2:
            raise
        reason = str(exc)
    finally:
        t0 = time.monotonic()
        if created is not None:
            try:
                ctx.engine.remove(created.id, force=True)
            except Exception:
                pass
        for clone in clones:
            try:
                ctx.volumes.remove(clone, force=True)
            except Exception:
                pass
        timings["cleanup"] = time.monotonic() - t0
    result = {"ok": ok, "reason": reason, "plan": plan.to_json(), "volumes": reports,
              "timings": timings, "summary": _summary({k: v for k, v in reports.items()
                                                      if not k.startswith("_")})}
    if not ok:
        raise NotDone(f"rehearsal of the upgrade of {c.name} to {plan.new_image} failed: {reason}",
                      result=result)
    return result
