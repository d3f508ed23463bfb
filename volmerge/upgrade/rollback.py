"""``volmerge rollback``: back to an earlier generation after a committed upgrade.

The generation's volumes return to the snapshot taken when it was left (O(1),
no copy); its container (kept, stopped, as ``NAME.genN``) takes back the
name, address and ports.  Data written since the upgrade is counted first
(paths, and rows of SQLite databases) and is only dropped with
``discard_new_data`` or kept as clone volumes with ``keep_new_data_as``.

The runner (runner.py) journals and walks the steps.  Steps before the
volume rollback are undone on failure; the volume rollback is the point of
no return, after which a crash is rolled forward by ``recover``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, NotDone, NotFound
from ..parked import parked_name
from . import journal as jr
from . import runner
from . import steps as st
from .runner import Failed, Prepared, Progress, no_progress
from .sockets import hand_over
from .steps import Step, Tx, find_container

if TYPE_CHECKING:
    from volmerge.runtime.containers import Container

    from .ctx import Ctx
    from .journal import Generation


@dataclass(frozen=True)
class SwapNames(Step):
    """The current container becomes ``NAME.genN``; the target generation's
    container takes ``NAME`` back."""

    kind = "swapnames"
    name: str
    current_id: str
    parked: str
    target_id: str
    target_name: str

    def describe(self) -> str:
        return (f"rename {self.name} to {self.parked} and "
                f"{self.target_name} to {self.name}")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        ctx.engine.rename(self.current_id, self.parked)
        ctx.engine.rename(self.target_id, self.name)
        return {}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return st.NamesBack(names=((self.target_id, self.target_name), (self.current_id, self.name)))


@dataclass(frozen=True)
class MoveNetwork(Step):
    kind = "movenet"
    from_id: str
    to_id: str

    def describe(self) -> str:
        return "hand the address and published ports back"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if ctx.network.leases(container_id=self.from_id):
            ctx.network.takeover(self.from_id, self.to_id)
        return {}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return st.HandBackNetwork(from_ref=self.to_id, to_id=self.from_id)


@dataclass(frozen=True)
class VolumeRollback(Step):
    """The point of no return: newer data is dropped (or kept aside)."""

    kind = "volrollback"
    volume: str
    tag: str
    keep_as: str | None = None

    def describe(self) -> str:
        keep = f", keeping the newer data as {self.keep_as}" if self.keep_as else ""
        return f"roll volume {self.volume} back to {self.tag}{keep}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        vm = ctx.volumes
        if self.keep_as and vm.exists(self.keep_as):
            # Rolled forward after a crash: the keep copy exists, so the
            # rollback itself was committed already.
            return {}
        vm.rollback(self.volume, to=self.tag, keep_as=self.keep_as)
        return {}


@dataclass(frozen=True)
class RestoreBase(Step):
    kind = "restorebase"
    volume: str
    target: str
    image_id: str

    def describe(self) -> str:
        return f"volume {self.volume}: the old image's content is the merge base again"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from .imageview import image_root, inside

        image = ctx.images.get(self.image_id)
        with image_root(ctx.store, image) as root:
            src = inside(root, self.target)
            if src is not None:
                ctx.volumes.set_base(self.volume, src)
        return {}


@dataclass(frozen=True)
class StartTarget(Step):
    kind = "starttarget"
    target_id: str
    name: str
    gen: int

    def describe(self) -> str:
        return f"start {self.name} (generation {self.gen})"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = ctx.engine.get(self.target_id)
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


def new_data(ctx: Ctx, volume: str, since: str) -> dict[str, Any]:
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


def rollback(ctx: Ctx, container: str, *, to: int | None = None, discard_new_data: bool = False,
             keep_new_data_as: str | None = None, stop_timeout: float = 10.0,
             dry_run: bool = False, progress: Progress = no_progress) -> dict[str, Any]:
    if discard_new_data and keep_new_data_as:
        raise BadInput("--discard-new-data and --keep-new-data-as exclude each other")
    cur_c = ctx.engine.get(container)
    name = cur_c.name

    def prepare() -> Prepared:
        return _prepare(ctx, cur_c, to=to, discard_new_data=discard_new_data,
                        keep_new_data_as=keep_new_data_as, stop_timeout=stop_timeout)

    if dry_run:
        with runner.locked(ctx, name):
            runner.recover(ctx, container=name, locked=True)
            plan, _target, vols = _plan(ctx, cur_c, to)
            _check_keep_names(ctx, _keep_names(vols, keep_new_data_as))
        return {**_report(plan), "dry_run": True}
    try:
        done = runner.run_journaled(ctx, "rollback", name, prepare, progress=progress)
    except Failed as exc:
        if not exc.undone:
            raise NotDone(f"rollback of {name} stopped after its volumes were rolled back: "
                          f"{exc.reason}; run `volmerge recover` to finish it") from None
        raise NotDone(f"rollback of {name} not done, nothing changed: {exc.reason}") from None
    return {**_report(done.prepared.plan), "id": done.id, "kept_as": keep_new_data_as,
            "timings": done.tx.timings}


def _report(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: plan[k] for k in ("container", "from_gen", "to_gen", "from_image", "to_image",
                                 "new_data")}


def _plan(ctx: Ctx, cur_c: Container, to: int | None
          ) -> tuple[dict[str, Any], Generation, dict[str, dict[str, Any]]]:
    """The target generation, the snapshots it was left at, the data written
    since: the journaled plan, the target and the volumes' snapshot tags."""
    name = cur_c.name
    gens = jr.generations(ctx.store, name)
    current = [g for g in gens if g.state == "current" and g.container_id == cur_c.id]
    if not current:
        raise NotFound(f"{name} has no committed upgrade to roll back")
    cur = current[-1]
    live = [g for g in gens if g.state == "previous"]
    if to is None:
        target = max((g for g in live if g.gen < cur.gen), key=lambda g: g.gen, default=None)
    else:
        target = next((g for g in live if g.gen == to), None)
        if target is None:
            known = ", ".join(str(g.gen) for g in live) or "none"
            raise BadInput(f"{name} has no generation {to} to roll back to (available: {known})")
    if target is None:
        raise NotFound(f"{name} has no earlier generation")
    # The upgrade that last left the target generation holds its snapshots.
    leaving = jr.leaving(gens, target)
    if leaving is None:
        raise NotDone(f"generation {target.gen} of {name} has no recorded snapshots")
    vols = {k: v for k, v in leaving.volumes.items() if not k.startswith("_")}
    since = {k: v for k, v in cur.volumes.items() if not k.startswith("_")}
    lost = {v: new_data(ctx, v, since[v]["post"] if v in since else vols[v]["post"]) for v in vols}
    plan = {"container": name, "from_gen": cur.gen, "to_gen": target.gen,
            "from_image": cur.image_ref, "to_image": target.image_ref, "new_data": lost,
            "target_gen": target.gen}
    return plan, target, vols


def prepare(ctx: Ctx, container: str, *, to: int | None = None, discard_new_data: bool = False,
            keep_new_data_as: str | None = None, stop_timeout: float = 10.0) -> Prepared:
    """A rollback's run for a caller that holds the container's lock (a
    compose stack's rollback chains several, upgrade/group.py)."""
    return _prepare(ctx, ctx.engine.get(container), to=to, discard_new_data=discard_new_data,
                    keep_new_data_as=keep_new_data_as, stop_timeout=stop_timeout)


def _prepare(ctx: Ctx, cur_c: Container, *, to: int | None, discard_new_data: bool,
             keep_new_data_as: str | None, stop_timeout: float) -> Prepared:
    """Under the lock: the plan, then the steps (refused when they would
    drop data nobody said to drop)."""
    name = cur_c.name
    plan, target, vols = _plan(ctx, cur_c, to)
    lost = plan["new_data"]
    if any(d["paths"] for d in lost.values()) and not (discard_new_data or keep_new_data_as):
        n_paths = sum(len(d["paths"]) for d in lost.values())
        n_rows = sum(abs(x) for d in lost.values() for t in d["rows"].values() for x in t.values())
        raise BadInput(
            f"rolling {name} back to generation {target.gen} would lose data written since the "
            f"upgrade ({n_paths} path(s), {n_rows} row(s) changed): pass --discard-new-data, "
            f"or --keep-new-data-as NAME to keep it as a volume"
        )
    keeps = _keep_names(vols, keep_new_data_as)
    _check_keep_names(ctx, keeps)
    tgt_c = ctx.engine.get(target.container_id)
    steps: list[Step] = [
        st.StopContainer(id=cur_c.id, name=name, timeout=stop_timeout,
                         running=cur_c.state in ("running", "paused")),
        SwapNames(name=name, current_id=cur_c.id, parked=parked_name(name, plan["from_gen"]),
                  target_id=tgt_c.id, target_name=tgt_c.name),
        MoveNetwork(from_id=cur_c.id, to_id=tgt_c.id),
        *hand_over(cur_c.options, cur_c.id, name, tgt_c.id),  # --socket-activate (sockets.py)
    ]
    for v in vols:
        steps.append(VolumeRollback(volume=v, tag=vols[v]["pre"], keep_as=keeps.get(v)))
    for v, info in vols.items():
        steps.append(RestoreBase(volume=v, target=info["target"], image_id=target.image_id))
    steps.append(StartTarget(target_id=tgt_c.id, name=name, gen=target.gen))
    return Prepared(steps=tuple(steps), from_image=plan["from_image"], to_image=target.image_ref,
                    plan=plan, point_of_no_return=VolumeRollback.kind)


def _keep_names(vols: dict[str, Any], keep: str | None) -> dict[str, str]:
    """The volume each volume's newer data is kept as: ``keep`` for a
    container with one volume, ``keep-VOLUME`` for one with several."""
    if not keep:
        return {}
    return {v: keep if len(vols) == 1 else f"{keep}-{v}" for v in vols}


def _check_keep_names(ctx: Ctx, keeps: dict[str, str]) -> None:
    """The volumes the newer data is to be kept as (``--keep-new-data-as``):
    valid names that no volume has yet; BadInput before anything changes.
    A taken one was read as a rollback already done (after a crash, the
    step that keeps the data finds its copy), which skipped the volume's
    rollback: the old version then started on the newer data."""
    from volmerge.volumes.model import check_name

    for keep in keeps.values():
        check_name(keep, "name for the newer data")
        if ctx.volumes.exists(keep):
            raise BadInput(f"volume {keep!r} already exists: choose another name for the "
                           "newer data (--keep-new-data-as)")


def _record(ctx: Ctx, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    """The target generation is current again; the ones after it are
    discarded.  From the journal alone: recovery rolls forward and commits."""
    row = journal.row()
    plan = journal.plan()
    db.execute("UPDATE generations SET state = 'discarded' WHERE container = ? AND gen > ?",
               (row["container"], plan["target_gen"]))
    db.execute("UPDATE generations SET state = 'current' WHERE container = ? AND gen = ?",
               (row["container"], plan["target_gen"]))


def finish_rollback(ctx: Ctx, journal: jr.Journal) -> None:
    """After COMMIT: remove the containers of discarded generations."""
    row = journal.row()
    plan = journal.plan()
    for g in jr.generations(ctx.store, row["container"]):
        if g.state == "discarded" and g.gen > plan["target_gen"]:
            c = find_container(ctx, g.container_id)
            if c is not None:
                ctx.engine.remove(c.id, force=True)


FINISHER = runner.Finisher(record=_record, finish=finish_rollback)
runner.register("rollback", FINISHER)
