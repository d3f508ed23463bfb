"""``volmerge prune``: forget upgrade generations nobody can return to.

Every committed upgrade keeps the generation it left: the old container,
stopped and renamed ``NAME.genN``, its generation row, and two tagged
snapshots per volume (``upgrade-<journal>-pre`` and ``-post``), which
compaction never squashes.  Over months of upgrades that is a container and
two layers per upgrade.  Pruning keeps the newest ``keep`` generations of a
container (the current one and the ``keep - 1`` newest it can roll back to)
and drops the rest: the parked containers, the rows, the journals that only
they name, and the snapshot tags only they need (the volume is then
compacted, so the untagged layers are squashed).  The images those
generations ran go too when nothing else refers to them (:func:`_images`).

What a kept generation needs is exactly what :func:`rollback._plan` reads:
the current row and its ``post`` tags (what was written since), and for each
kept earlier generation the row of the upgrade that left it and that row's
``pre`` tags.  Runs under the container's transaction lock, so never during
an upgrade, rollback or rehearsal of it.  A compose stack's history (its
generations and journals) is pruned with its services' generations by
volmerge/compose/stackprune.py, which calls :func:`prune_one` per container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, Conflict, NotFound
from ..parked import is_parked
from . import journal as jr
from . import runner
from .steps import find_container

if TYPE_CHECKING:
    from .ctx import Ctx
    from .journal import Generation


@dataclass(frozen=True)
class PrunePlan:
    """What pruning one container removes (and keeps)."""

    container: str
    keep: tuple[int, ...]                    # generation numbers kept
    rows: tuple[int, ...]                    # generation rows deleted
    containers: tuple[tuple[str, str], ...]  # (id, name) of parked containers removed
    tags: dict[str, tuple[str, ...]]         # volume -> snapshot tags forgotten
    journals: tuple[str, ...]                # journal ids deleted
    images: tuple[tuple[str, str], ...] = ()  # (id, ref it ran as) of images removed

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "keep": list(self.keep),
                "generations": list(self.rows),
                "containers": [{"id": i, "name": n} for i, n in self.containers],
                "snapshots": {v: list(t) for v, t in self.tags.items()},
                "journals": list(self.journals),
                "images": [{"id": i, "ref": r} for i, r in self.images]}


def _tags(g: Generation, which: str) -> dict[str, str]:
    return {v: info[which] for v, info in g.volumes.items()
            if not v.startswith("_") and isinstance(info, dict) and info.get(which)}


def kept(gens: list[Generation], keep: int | None) -> list[Generation]:
    """The newest ``keep`` generations (None: all) a container keeps: its
    current one and the newest earlier ones ``rollback`` can return to
    (``previous``, below the current one).  Pure."""
    current = [g for g in gens if g.state == "current"]
    cur = current[-1] if current else None
    live = sorted((g for g in gens if g.state == "previous" and (cur is None or g.gen < cur.gen)),
                  key=lambda g: g.gen, reverse=True)
    if keep is None:
        return ([cur] if cur else []) + live
    return ([cur] if cur else []) + live[: keep - 1 if cur else keep]


def plan(ctx: Ctx, name: str, keep: int) -> PrunePlan:
    """What pruning ``name`` to its newest ``keep`` generations removes."""
    gens = jr.generations(ctx.store, name)
    current = [g for g in gens if g.state == "current"]
    cur = current[-1] if current else None
    kept_ = kept(gens, keep)
    needed = {g.gen for g in kept_}
    need_tags: dict[str, set[str]] = {}
    if cur is not None:
        for v, t in _tags(cur, "post").items():
            need_tags.setdefault(v, set()).add(t)
    for g in kept_:
        if g is cur:
            continue
        leaving = jr.leaving(gens, g)  # what rollback._plan reads
        if leaving is not None:
            needed.add(leaving.gen)
            for which in ("pre", "post"):  # post: rollback._plan's fallback for "since"
                for v, t in _tags(leaving, which).items():
                    need_tags.setdefault(v, set()).add(t)
    drop = [g for g in gens if g.gen not in needed]
    tags: dict[str, set[str]] = {}
    for g in gens:  # a kept row's own tags may be needed by nobody
        for which in ("pre", "post"):
            for v, t in _tags(g, which).items():
                if t not in need_tags.get(v, set()):
                    tags.setdefault(v, set()).add(t)
    for v in list(tags):  # only tags the volume still has (a second prune finds none)
        have = {s.tag for s in ctx.volumes.snapshots(v)} if ctx.volumes.exists(v) else set()
        tags[v] &= have
        if not tags[v]:
            del tags[v]
    containers = []
    for g in drop:
        c = find_container(ctx, g.container_id)
        # only a parked, stopped container: never the one serving under the name
        if (c is not None and is_parked(c.name, of=name)
                and c.state not in ("running", "paused", "restarting")):
            containers.append((c.id, c.name))
    return PrunePlan(
        container=name, keep=tuple(sorted(g.gen for g in kept_)),
        rows=tuple(g.gen for g in drop), containers=tuple(containers),
        tags={v: tuple(sorted(t)) for v, t in sorted(tags.items())},
        journals=tuple(_journals(ctx, name, [g for g in gens if g.gen in needed])),
        images=tuple(_images(ctx, name, drop, {n for _, n in containers})),
    )


def _images(ctx: Ctx, name: str, drop: list[Generation], removed: set[str]) -> list[tuple[str, str]]:
    """The images only the dropped generations referred to, as podman users
    expect of a clean-up: never a tagged image (a name is the user's, as
    ``podman image prune`` without --all keeps it), never one a container
    uses (other than the parked ones going now), a generation row kept (of
    any container) names, or an open upgrade or rollback is moving to or from.
    What is left are images that lost their tag to a newer load or pull while
    an old generation still ran them."""
    refs = {g.image_id: g.image_ref for g in drop if g.image_id}
    if not refs:
        return []
    db = ctx.store.db
    going = {g.gen for g in drop}
    kept_rows = {r["image_id"] for r in db.execute("SELECT container, gen, image_id FROM generations")
                 if not (r["container"] == name and r["gen"] in going)}
    moving = set()
    for row in jr.pending(ctx.store):
        for ref in (row["from_image"], row["to_image"]):
            try:
                moving.add(ctx.images.get(ref).id if ref else "")
            except Exception:  # noqa: BLE001 - a ref no longer known names nothing to keep
                continue
    out = []
    for image_id, ref in sorted(refs.items()):
        if image_id in kept_rows or image_id in moving:
            continue
        if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            continue  # removed already
        if db.execute("SELECT 1 FROM tags WHERE image_id = ? LIMIT 1", (image_id,)).fetchone():
            continue
        if not set(ctx.engine.users_of_image(image_id)) - removed:
            out.append((image_id, ref))
    return out


def _journals(ctx: Ctx, name: str, kept: list[Generation]) -> list[str]:
    """Finished journals (never an open one: begun, committed) that neither a
    kept generation names nor tell how the current state came about: those
    before the last transaction that committed (the upgrade or rollback that
    made the current generation current)."""
    keep_ids = {g.journal_id for g in kept if g.journal_id}
    rows = ctx.store.db.execute(
        "SELECT id, state, started FROM upgrade_journal WHERE container = ?"
        " AND state IN ('done', 'rolled-back') ORDER BY started", (name,)).fetchall()
    last = max((r["started"] for r in rows if r["state"] == "done"), default=None)
    if last is None:
        return []
    return [r["id"] for r in rows if r["id"] not in keep_ids and r["started"] < last]


def _apply(ctx: Ctx, p: PrunePlan) -> None:
    """Rows first (one database transaction: from then on nothing refers to
    what follows), then the containers and the snapshot tags; a crash in
    between leaves only unreferenced things, which the next prune skips and
    ``rm`` or ``volume compact`` can take."""
    with ctx.store.transaction() as db:
        for gen in p.rows:
            db.execute("DELETE FROM generations WHERE container = ? AND gen = ?",
                       (p.container, gen))
        for jid in p.journals:
            db.execute("DELETE FROM upgrade_steps WHERE journal_id = ?", (jid,))
            db.execute("DELETE FROM upgrade_journal WHERE id = ?", (jid,))
    for cid, _name in p.containers:
        if find_container(ctx, cid) is not None:
            ctx.engine.remove(cid, force=True)
    for vol, tags in p.tags.items():
        if ctx.volumes.exists(vol):
            ctx.volumes.untag(vol, set(tags))
    from volmerge.runtime.errors import BadInput as RtBadInput

    for image_id, _ref in p.images:
        try:  # image rm checks again, under its lock, that no container uses it
            ctx.images.remove(f"sha256:{image_id}", only_untagged=True)
        except RtBadInput:
            continue  # tagged, used or removed since the plan: it stays (or is gone)


def names(ctx: Ctx, containers: list[str]) -> list[str]:
    """The containers to prune: the named ones (a removed container's history
    counts), or every container with generations."""
    jr.ensure(ctx.store)
    known = [r[0] for r in ctx.store.db.execute(
        "SELECT DISTINCT container FROM generations ORDER BY container")]
    if not containers:
        return known
    from volmerge.runtime.errors import NotFound as RtNotFound

    out = []
    for ref in containers:
        try:
            out.append(ctx.engine.get(ref).name)
        except RtNotFound:
            if ref not in known:
                raise NotFound(f"no such container: {ref}") from None
            out.append(ref)
    return list(dict.fromkeys(out))


def prune_one(ctx: Ctx, name: str, *, keep: int, dry_run: bool,
              held: tuple[str, ...] = ()) -> PrunePlan:
    """Prune ``name`` under its transaction lock (``held``: the other locks
    the caller holds, a compose stack's); Conflict while a transaction of it
    is open."""
    try:
        with runner.locked(ctx, name):
            runner.recover(ctx, container=name, locked=True, held=held)
            open_ = [r["id"] for r in jr.pending(ctx.store) if r["container"] == name]
            if open_:
                raise Conflict(f"{name} has an unfinished upgrade ({open_[0]}): "
                               "run `volmerge recover` first")
            p = plan(ctx, name, keep)
            if not dry_run:
                _apply(ctx, p)
    except Conflict as exc:
        raise Conflict(f"cannot prune {name}: {exc}") from None
    return p


def check_keep(keep: int) -> None:
    if keep < 1:
        raise BadInput(f"--keep must be at least 1 (the current generation), not {keep}")


def prune(ctx: Ctx, containers: list[str], *, keep: int = 2,
          dry_run: bool = False) -> list[dict[str, Any]]:
    """Prune each container's generations to its newest ``keep``; returns
    one report per container (what went, or would go with ``dry_run``).
    The stacks' history is volmerge/compose/stackprune.py's, which calls
    :func:`prune_one` for each container."""
    check_keep(keep)
    return [{**prune_one(ctx, name, keep=keep, dry_run=dry_run).to_json(), "dry_run": dry_run}
            for name in names(ctx, containers)]
