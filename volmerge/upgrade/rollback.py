"""``volmerge rollback``: back to an earlier generation after a committed upgrade.

The generation's volumes return to the snapshot taken when it was left (O(1),
no copy); its container (kept, stopped, as ``NAME.genN``) takes back the
name, address and ports.  Data written since the upgrade is counted first
(paths, and rows of SQLite databases) and is only dropped with
``discard_new_data`` or kept as clone volumes with ``keep_new_data_as``.

Steps before the volume rollback are undone on failure; the volume rollback
is the point of no return, after which a crash is rolled forward.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import BadInput, NotDone, NotFound
from . import journal as jr
from . import steps as st


class SwapNames(st.Step):
    """The current container becomes ``NAME.genN``; the target generation's
    container takes ``NAME`` back."""

    kind = "swapnames"

    def describe(self) -> str:
        return (f"rename {self.args['name']} to {self.args['parked']} and "
                f"{self.args['target_name']} to {self.args['name']}")

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        ctx.engine.rename(self.args["current_id"], self.args["parked"])
        ctx.engine.rename(self.args["target_id"], self.args["name"])
        return {}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        t = st._container(ctx, self.args["target_id"])
        if t is not None and t.name != self.args["target_name"]:
            ctx.engine.rename(t.id, self.args["target_name"])
        c = st._container(ctx, self.args["current_id"])
        if c is not None and c.name != self.args["name"]:
            ctx.engine.rename(c.id, self.args["name"])


class MoveNetwork(st.Step):
    kind = "movenet"

    def describe(self) -> str:
        return "hand the address and published ports back"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        if ctx.network.leases(container_id=self.args["from_id"]):
            ctx.network.takeover(self.args["from_id"], self.args["to_id"])
        return {}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        if ctx.network.leases(container_id=self.args["to_id"]):
            ctx.network.disconnect(self.args["to_id"])
            ctx.network.takeover(self.args["to_id"], self.args["from_id"])


class VolumeRollback(st.Step):
    kind = "volrollback"

    def describe(self) -> str:
        keep = f", keeping the newer data as {self.args['keep_as']}" if self.args.get("keep_as") else ""
        return f"roll volume {self.args['volume']} back to {self.args['tag']}{keep}"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        vm = ctx.volumes
        keep = self.args.get("keep_as")
        if keep and vm.exists(keep):
            # Rolled forward after a crash: the keep copy exists, so the
            # rollback itself was committed already.
            return {}
        vm.rollback(self.args["volume"], to=self.args["tag"], keep_as=keep)
        return {}


class RestoreBase(st.Step):
    kind = "restorebase"

    def describe(self) -> str:
        return f"volume {self.args['volume']}: the old image's content is the merge base again"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        from .imageview import image_root, inside

        image = ctx.images.get(self.args["image_id"])
        with image_root(ctx.store, image) as root:
            src = inside(root, self.args["target"])
            if src is not None:
                ctx.volumes.set_base(self.args["volume"], src)
        return {}


class StartTarget(st.Step):
    kind = "starttarget"

    def describe(self) -> str:
        return f"start {self.args['name']} (generation {self.args['gen']})"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        c = ctx.engine.get(self.args["target_id"])
        if c.state not in ("running", "paused"):
            ctx.engine.start(c.id)
        return {}


def _rows(db_path: Path) -> dict[str, int]:
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True)
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
            return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def new_data(ctx: Any, volume: str, since: str) -> dict[str, Any]:
    """What was written to ``volume`` after snapshot ``since``: paths, and
    row-count changes of SQLite databases among them."""
    changes = ctx.volumes.diff(volume, from_=since, to=None)
    paths = [{"path": ch.path, "kind": ch.kind} for ch in changes]
    rows: dict[str, Any] = {}
    dbs = [ch.path for ch in changes if ch.kind != "deleted"]
    if dbs:
        with ctx.volumes.view(volume) as now, ctx.volumes.view(volume, at=since) as then:
            for p in dbs:
                cur = now / p.lstrip("/")
                try:
                    with open(cur, "rb") as f:
                        if f.read(16) != b"SQLite format 3\x00":
                            continue
                except OSError:
                    continue
                a, b = _rows(then / p.lstrip("/")), _rows(cur)
                delta = {t: b.get(t, 0) - a.get(t, 0) for t in set(a) | set(b)
                         if b.get(t, 0) != a.get(t, 0)}
                if delta:
                    rows[p] = delta
    return {"paths": paths, "rows": rows}


def rollback(ctx: Any, container: str, *, to: int | None = None, discard_new_data: bool = False,
             keep_new_data_as: str | None = None, stop_timeout: float = 10.0,
             dry_run: bool = False) -> dict[str, Any]:
    from .transaction import _lock, undo_steps

    if discard_new_data and keep_new_data_as:
        raise BadInput("--discard-new-data and --keep-new-data-as exclude each other")
    cur_c = ctx.engine.get(container)
    name = cur_c.name
    lock = _lock(ctx, name)
    try:
        from .recovery import recover

        recover(ctx, container=name, locked=True)
        gens = jr.generations(ctx.store, name)
        current = [g for g in gens if g.state == "current" and g.container_id == cur_c.id]
        if not current:
            raise NotFound(f"{name} has no committed upgrade to roll back")
        cur = current[-1]
        live = [g for g in gens if g.state in ("previous",)]
        target = None
        if to is None:
            target = max((g for g in live if g.gen < cur.gen), key=lambda g: g.gen, default=None)
        else:
            target = next((g for g in live if g.gen == to), None)
            if target is None:
                known = ", ".join(str(g.gen) for g in live) or "none"
                raise BadInput(f"{name} has no generation {to} to roll back to (available: {known})")
        if target is None:
            raise NotFound(f"{name} has no earlier generation")
        # The upgrade that left the target generation holds its snapshots.
        leaving = min((g for g in gens if g.gen > target.gen and g.volumes.get("_from_gen") == target.gen),
                      key=lambda g: g.gen, default=None)
        if leaving is None:
            raise NotDone(f"generation {target.gen} of {name} has no recorded snapshots")
        vols = {k: v for k, v in leaving.volumes.items() if not k.startswith("_")}
        since = {k: v for k, v in cur.volumes.items() if not k.startswith("_")}
        lost = {v: new_data(ctx, v, since[v]["post"] if v in since else vols[v]["post"]) for v in vols}
        has_new = any(d["paths"] for d in lost.values())
        plan = {"container": name, "from_gen": cur.gen, "to_gen": target.gen,
                "from_image": cur.image_ref, "to_image": target.image_ref, "new_data": lost}
        if dry_run:
            return {**plan, "dry_run": True}
        if has_new and not (discard_new_data or keep_new_data_as):
            n_paths = sum(len(d["paths"]) for d in lost.values())
            n_rows = sum(abs(x) for d in lost.values() for t in d["rows"].values() for x in t.values())
            raise BadInput(
                f"rolling {name} back to generation {target.gen} would lose data written since the "
                f"upgrade ({n_paths} path(s), {n_rows} row(s) changed): pass --discard-new-data, "
                f"or --keep-new-data-as NAME to keep it as a volume"
            )
        tgt_c = ctx.engine.get(target.container_id)
        steps: list[st.Step] = [
            st.StopContainer(id=cur_c.id, name=name, timeout=stop_timeout,
                             running=cur_c.state in ("running", "paused")),
            SwapNames(name=name, current_id=cur_c.id, parked=f"{name}.gen{cur.gen}",
                      target_id=tgt_c.id, target_name=tgt_c.name),
            MoveNetwork(from_id=cur_c.id, to_id=tgt_c.id),
        ]
        for v, info in vols.items():
            keep = None
            if keep_new_data_as:
                keep = keep_new_data_as if len(vols) == 1 else f"{keep_new_data_as}-{v}"
            steps.append(VolumeRollback(volume=v, tag=info["pre"], keep_as=keep))
        for v, info in vols.items():
            steps.append(RestoreBase(volume=v, target=info["target"], image_id=target.image_id))
        steps.append(StartTarget(target_id=tgt_c.id, name=name, gen=target.gen))
        journal = jr.Journal.begin(
            ctx.store, container=name, kind="rollback", from_image=cur.image_ref,
            to_image=target.image_ref, plan={**plan, "target_gen": target.gen, "from_gen": cur.gen},
            steps=[s.to_journal() for s in steps],
        )
        applied: list[tuple[int, st.Step, dict[str, Any]]] = []
        timings: dict[str, float] = {}
        past_return = False
        try:
            for i, step in enumerate(steps):
                st.fault(f"rollback.before-{step.kind}")
                journal.step_state(i, "applying")
                if step.kind == "volrollback":
                    past_return = True
                applied.append((i, step, {}))
                t0 = time.monotonic()
                u = step.apply(ctx, None)  # rollback steps share no transaction state
                timings[f"{step.kind}#{i}"] = time.monotonic() - t0
                journal.step_state(i, "applied", u)
        except BaseException as exc:
            if past_return:
                journal.finish("begun", error=str(exc))
                raise NotDone(f"rollback of {name} stopped after its volumes were rolled back: {exc}; "
                              "run `volmerge recover` to finish it") from None
            undo_steps(ctx, journal, applied)
            journal.finish("rolled-back", error=str(exc))
            raise NotDone(f"rollback of {name} not done, nothing changed: {exc}") from None
        _commit(ctx, journal, name, cur.gen, target.gen)
        finish_rollback(ctx, journal.id)
        return {**plan, "id": journal.id, "kept_as": keep_new_data_as, "timings": timings}
    finally:
        lock.__exit__(None, None, None)


def _commit(ctx: Any, journal: jr.Journal, name: str, cur_gen: int, target_gen: int) -> None:
    with ctx.store.transaction() as db:
        db.execute("UPDATE generations SET state = 'discarded' WHERE container = ? AND gen > ?",
                   (name, target_gen))
        db.execute("UPDATE generations SET state = 'current' WHERE container = ? AND gen = ?",
                   (name, target_gen))
        journal.finish("committed", db=db)


def finish_rollback(ctx: Any, jid: str) -> None:
    """After COMMIT: remove the containers of discarded generations."""
    j = jr.Journal(ctx.store, jid)
    row = j.row()
    plan = json.loads(row["plan"])
    for g in jr.generations(ctx.store, row["container"]):
        if g.state == "discarded" and g.gen > plan["target_gen"]:
            c = st._container(ctx, g.container_id)
            if c is not None:
                ctx.engine.remove(c.id, force=True)
    with ctx.store.transaction() as db:
        db.execute("UPDATE upgrade_journal SET state = 'done' WHERE id = ? AND state = 'committed'",
                   (jid,))


def roll_forward(ctx: Any, j: jr.Journal, steps: list[dict[str, Any]]) -> None:
    """A crash after the point of no return: apply the remaining steps."""
    for s in steps:
        if s["state"] == "applied":
            continue
        step = st.from_journal(s["kind"], s["args"])
        j.step_state(s["idx"], "applying")
        u = step.apply(ctx, None)
        j.step_state(s["idx"], "applied", u)
    row = j.row()
    plan = json.loads(row["plan"])
    _commit(ctx, j, row["container"], plan["from_gen"], plan["target_gen"])
    finish_rollback(ctx, j.id)
