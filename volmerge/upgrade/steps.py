"""The steps of an upgrade: data that knows how to describe, apply and undo
itself (architecture.md, principle 1).

A step is rebuilt from ``(kind, args)`` as stored in the journal, so that
recovery after a crash can undo it without the process that started it.
Every ``undo`` is idempotent and tolerates a step that was cut short half-way
(``applying`` in the journal): it inspects the world rather than trusting
the undo data alone.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from ..errors import NotDone
from ..volumes import faults

STEPS: dict[str, type[Step]] = {}


class Step:
    kind: ClassVar[str] = ""

    def __init__(self, **args: Any) -> None:
        self.args = args

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            STEPS[cls.kind] = cls

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        """Do it; return what undo needs beyond the args."""
        raise NotImplementedError

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        return None

    def to_journal(self) -> tuple[str, dict[str, Any]]:
        return self.kind, self.args


def from_journal(kind: str, args: dict[str, Any]) -> Step:
    return STEPS[kind](**args)


def _container(ctx: Any, ref: str) -> Any:
    from volmerge.runtime.errors import NotFound

    try:
        return ctx.engine.get(ref)
    except NotFound:
        return None


class StopContainer(Step):
    kind = "stop"

    def describe(self) -> str:
        return f"stop {self.args['name']} (SIGTERM, {self.args['timeout']:g}s, then SIGKILL)"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        c = ctx.engine.get(self.args["id"])
        was = c.state in ("running", "paused")
        if was:
            ctx.engine.stop(c.id, timeout=self.args["timeout"])
        return {"was_running": was}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        if not data.get("was_running", self.args.get("running", True)):
            return
        c = _container(ctx, self.args["id"])
        if c is not None:  # start sees a stop this step began (and was killed in) through first
            ctx.engine.start(c.id, stop_timeout=self.args["timeout"])


class SnapshotVolume(Step):
    """Freeze the volume's live layer under a tag (O(1)).  Undo of the *pre*
    snapshot returns the volume to exactly this state, dropping whatever the
    merge wrote above it."""

    kind = "snapshot"

    def describe(self) -> str:
        return f"snapshot volume {self.args['volume']} as {self.args['tag']}"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        snap = ctx.volumes.snapshot(self.args["volume"], tag=self.args["tag"])
        return {"snapshot": snap.id}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        if not self.args.get("restore", False):
            return
        vol, tag = self.args["volume"], self.args["tag"]
        if any(s.tag == tag for s in ctx.volumes.snapshots(vol)):
            drop_stale_users(ctx, vol)
            ctx.volumes.rollback(vol, to=tag)


def drop_stale_users(ctx: Any, volume: str) -> None:
    """Forget users of a volume that no longer exist or do not run (a crash
    can cut a container's start short after it attached the volume)."""
    for cid in ctx.volumes.users(volume):
        c = _container(ctx, cid)
        if c is None or c.state not in ("running", "paused", "restarting"):
            ctx.volumes.detach(volume, cid)


class MergeVolume(Step):
    """Three-way merge into the volume's new (empty) live layer: base = the
    content the volume was last merged against (the old image's), ours = the
    frozen live data, theirs = the new image's content at the mount path.
    Only changed paths are written (an overlay upper layer)."""

    kind = "merge"

    def describe(self) -> str:
        return (f"merge {self.args['image']}:{self.args['target']} into volume "
                f"{self.args['volume']} ({self.args['on_conflict']} on conflict)")

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        report = merge_volume(ctx, tx.new_image, self.args["volume"], self.args["target"],
                              at=self.args["at"], out=ctx.volumes.live_upper(self.args["volume"]),
                              policy=tx.policy, on_conflict=self.args["on_conflict"],
                              old_image=ctx.images.get(tx.plan.old_image_id))
        tx.reports[self.args["volume"]] = report
        return {}


def merge_volume(ctx: Any, image: Any, volume: str, target: str, *, at: str | None, out: Any,
                 policy: Any, on_conflict: str, dry_run: bool = False,
                 old_image: Any = None) -> dict[str, Any]:
    """The merge of one volume (shared by the upgrade, the preview and the
    rehearsal).  Returns the tree report as JSON."""
    from volmerge.strategies.tree import MergeConflict, merge_trees

    from . import pgdata
    from .imageview import image_root, inside

    with image_root(ctx.store, image) as root, ctx.volumes.view(volume, at=at) as ours:
        theirs = inside(root, target)
        pg = pgdata.maybe_upgrade(ctx, old_image=old_image, new_image=image, volume=volume,
                                  target=target, ours=ours, theirs=theirs, out=out,
                                  dry_run=dry_run)
        if pg is not None:
            return pg
        if theirs is None:
            return {"summary": {"conflicts": 0}, "files": [], "sql": [],
                    "note": f"the new image has nothing at {target}: data kept as is"}
        base = ctx.volumes.base_path(volume)
        try:
            rep = merge_trees(base, ours, theirs, out, policy=policy, on_conflict=on_conflict,
                              mode="upper", dry_run=dry_run, diff=dry_run)
        except MergeConflict as exc:
            raise NotDone(
                f"volume {volume}: {len(exc.report.conflicts)} conflict(s), first at "
                f"{_first_conflict(exc.report)}; nothing was changed",
                report=exc.report.to_json(),
            ) from None
    return rep.to_json()


def _first_conflict(report: Any) -> str:
    for f in report.conflicts:
        loc = f"{f.path}"
        if f.conflicts:
            loc += f" ({f.conflicts[0].location}: {f.conflicts[0].message})"
        return loc
    return "?"


class RenameContainer(Step):
    kind = "rename"

    def describe(self) -> str:
        return f"keep {self.args['old_name']} as {self.args['new_name']} (generation {self.args['gen']})"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        ctx.engine.rename(self.args["id"], self.args["new_name"])
        return {}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        c = _container(ctx, self.args["id"])
        if c is not None and c.name != self.args["old_name"]:
            ctx.engine.rename(c.id, self.args["old_name"])


class CreateContainer(Step):
    kind = "create"

    def describe(self) -> str:
        return f"create {self.args['name']} from {self.args['image']} with the same mounts, ports and options"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        from volmerge.runtime.options import RunOptions

        opts = RunOptions.from_json(self.args["options"])
        c = ctx.engine.create(opts)
        tx.new_id = c.id
        return {"id": c.id}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        c = _container(ctx, data.get("id") or self.args["name"])
        if c is not None and c.id != self.args["old_id"]:
            ctx.engine.remove(c.id, force=True)


class TakeOverNetwork(Step):
    """The successor takes the old container's address and published ports."""

    kind = "takeover"

    def describe(self) -> str:
        return f"hand {self.args['old_name']}'s address and published ports to its successor"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        ctx.network.takeover(self.args["old_id"], tx.new_id)
        return {"new_id": tx.new_id}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        new_id = data.get("new_id")
        if new_id is None:
            c = _container(ctx, self.args["name"])
            new_id = c.id if c is not None and c.id != self.args["old_id"] else None
        if new_id and ctx.network.leases(container_id=new_id):
            ctx.network.disconnect(new_id)
            ctx.network.takeover(new_id, self.args["old_id"])


class StartContainer(Step):
    kind = "start"

    def describe(self) -> str:
        return f"start the new {self.args['name']}"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        ctx.engine.start(tx.new_id)
        return {"id": tx.new_id}

    def undo(self, ctx: Any, data: dict[str, Any]) -> None:
        c = _container(ctx, data.get("id") or self.args["name"])
        if c is not None and c.id != self.args["old_id"] and c.state in ("running", "paused"):
            ctx.engine.stop(c.id, timeout=self.args.get("timeout", 10))


class HealthCheck(Step):
    kind = "health"

    def describe(self) -> str:
        if self.args["check"]:
            return f"health check ({self.args['source']}) until healthy, at most {self.args['timeout']:g}s"
        return f"no health check: the new container must stay up for {self.args['timeout']:g}s"

    def apply(self, ctx: Any, tx: Any) -> dict[str, Any]:
        wait_healthy(ctx, tx.new_id, self.args["check"], self.args["timeout"])
        return {}


def wait_healthy(ctx: Any, cid: str, has_check: bool, timeout: float) -> None:
    eng = ctx.engine
    if has_check:
        eng.wait(cid, healthy=True, timeout=timeout)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = eng.get(cid)
        if c.state not in ("running", "paused"):
            raise NotDone(f"container {c.name} exited with code {c.exit_code} during the health period")
        time.sleep(0.1)


def fault(point: str) -> None:
    faults.point(point)
