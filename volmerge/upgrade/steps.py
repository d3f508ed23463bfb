"""The steps of a transaction: data that knows how to describe, apply and
undo itself (architecture.md, principles 1 and 12).

A step is a frozen dataclass: its typed fields are all it needs, and they go
to the journal as ``dataclasses.asdict``, so that recovery after a crash can
rebuild it (``from_journal``) and undo it without the process that started
it.  Its undo is itself data, as alembic's ``MigrateOperation.reverse()``:
``reverse(data)`` returns the step that puts the world back (or None), built
from the fields and what ``apply`` returned.  Every reverse step is
idempotent and tolerates a step that was cut short half-way (``applying`` in
the journal, no undo data): it inspects the world rather than trusting the
undo data alone.

This module holds the base, the registry of step kinds and the upgrade's
steps; rollback.py and rehearsal.py add theirs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import NotDone
from ..volumes import faults

if TYPE_CHECKING:
    from volmerge.runtime.containers import Container
    from volmerge.runtime.images import Image
    from volmerge.strategies.policy import Policy

    from .ctx import Ctx

STEPS: dict[str, type[Step]] = {}


@dataclass
class Tx:
    """What the steps of one run share while it runs: images looked up once,
    the successor's id, the merge reports, the timings.  Not journaled: after
    a crash each step's own undo data is enough."""

    new_image: Image | None = None
    old_image: Image | None = None
    policy: Policy | None = None
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One change: ``apply`` does it and returns what its reverse needs
    beyond the fields; ``reverse`` is the step that puts the world back.  A
    step whose reverse is None changes nothing that needs putting back (a
    snapshot kept, a health check) or is past a point of no return."""

    kind: ClassVar[str] = ""
    #: its undo starts a stopped container again: undone after every other
    #: step, in the order the stops were applied (runner.undo_steps)
    restarts_on_undo: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            STEPS[cls.kind] = cls

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        raise NotImplementedError

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return None

    def undo(self, ctx: Ctx, data: dict[str, Any]) -> bool:
        """Apply the reverse; whether there was one."""
        r = self.reverse(data)
        if r is None:
            return False
        r.apply(ctx, Tx())
        return True

    def to_journal(self) -> tuple[str, dict[str, Any]]:
        return self.kind, dataclasses.asdict(self)


def from_journal(kind: str, args: dict[str, Any]) -> Step:
    """The step as journaled (by this version or an older one: the fields
    kept their names, and fields added since have defaults)."""
    return STEPS[kind](**args)


def find_container(ctx: Ctx, ref: str) -> Container | None:
    from volmerge.runtime.errors import NotFound

    try:
        return ctx.engine.get(ref)
    except NotFound:
        return None


def has_snapshot(ctx: Ctx, volume: str, tag: str) -> bool:
    """Whether ``volume`` has a snapshot tagged ``tag``."""
    return any(s.tag == tag for s in ctx.volumes.snapshots(volume))


def resume(ctx: Ctx, ref: str) -> None:
    """Container ``ref`` unpaused if a step cut short left it paused."""
    c = find_container(ctx, ref)
    if c is not None and c.state == "paused":
        ctx.engine.unpause(c.id)


def fault(point: str) -> None:
    faults.point(point)


@dataclass(frozen=True)
class StopContainer(Step):
    kind = "stop"
    restarts_on_undo = True
    id: str
    name: str
    timeout: float
    running: bool = True

    def describe(self) -> str:
        return f"stop {self.name} (SIGTERM, {self.timeout:g}s, then SIGKILL)"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = ctx.engine.get(self.id)
        was = c.state in ("running", "paused")
        if was:
            ctx.engine.stop(c.id, timeout=self.timeout)
        return {"was_running": was}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        if not data.get("was_running", self.running):
            return None
        return StartAgain(id=self.id, name=self.name, timeout=self.timeout)


@dataclass(frozen=True)
class StartAgain(Step):
    """The reverse of a stop: the container runs again (unless it is gone)."""

    kind = "start-again"
    id: str
    name: str
    timeout: float

    def describe(self) -> str:
        return f"start {self.name} again"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = find_container(ctx, self.id)
        if c is not None:  # start sees a stop this step began (and was killed in) through first
            ctx.engine.start(c.id, stop_timeout=self.timeout)
        return {}


@dataclass(frozen=True)
class SnapshotVolume(Step):
    """Freeze the volume's live layer under a tag (O(1)).  Undo of the *pre*
    snapshot returns the volume to exactly this state, dropping whatever the
    merge wrote above it."""

    kind = "snapshot"
    volume: str
    tag: str
    restore: bool = False

    def describe(self) -> str:
        return f"snapshot volume {self.volume} as {self.tag}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        snap = ctx.volumes.snapshot(self.volume, tag=self.tag)
        return {"snapshot": snap.id}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return RestoreSnapshot(volume=self.volume, tag=self.tag) if self.restore else None


@dataclass(frozen=True)
class RestoreSnapshot(Step):
    """The volume back to the snapshot ``tag`` (if it was taken), dropping
    whatever was written above it."""

    kind = "restore-snapshot"
    volume: str
    tag: str

    def describe(self) -> str:
        return f"roll volume {self.volume} back to {self.tag}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if has_snapshot(ctx, self.volume, self.tag):
            drop_stale_users(ctx, self.volume)
            ctx.volumes.rollback(self.volume, to=self.tag)
        return {}


def drop_stale_users(ctx: Ctx, volume: str) -> None:
    """Forget users of a volume that no longer exist or do not run (a crash
    can cut a container's start short after it attached the volume)."""
    for cid in ctx.volumes.users(volume):
        c = find_container(ctx, cid)
        if c is None or c.state not in ("running", "paused", "restarting"):
            ctx.volumes.detach(volume, cid)


@dataclass(frozen=True)
class MergeVolume(Step):
    """Three-way merge into the volume's new (empty) live layer: base = the
    content the volume was last merged against (the old image's), ours = the
    frozen live data (``at``; None: the volume as it is), theirs = the new
    image's content at the mount path.  Only changed paths are written (an
    overlay upper layer).  The report is filed under ``report_as`` (a
    rehearsal merges into a clone but reports the live volume's name)."""

    kind = "merge"
    volume: str
    target: str
    at: str | None
    image: str
    on_conflict: str
    report_as: str = ""

    def describe(self) -> str:
        return (f"merge {self.image}:{self.target} into volume "
                f"{self.volume} ({self.on_conflict} on conflict)")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from .merge import merge_volume

        report = merge_volume(ctx, tx.new_image, self.volume, self.target, at=self.at,
                              out=ctx.volumes.live_upper(self.volume), policy=tx.policy,
                              on_conflict=self.on_conflict, old_image=tx.old_image)
        tx.reports[self.report_as or self.volume] = report
        return {}


@dataclass(frozen=True)
class RenameContainer(Step):
    kind = "rename"
    id: str
    old_name: str
    new_name: str
    gen: int

    def describe(self) -> str:
        return f"keep {self.old_name} as {self.new_name} (generation {self.gen})"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        ctx.engine.rename(self.id, self.new_name)
        return {}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return NamesBack(names=((self.id, self.old_name),))


@dataclass(frozen=True)
class NamesBack(Step):
    """Each container ``id`` is called ``name`` again (if it still exists),
    in order."""

    kind = "names-back"
    names: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        return ", ".join(f"call {cid[:12]} {name} again" for cid, name in self.names)

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        for cid, name in self.names:
            c = find_container(ctx, cid)
            if c is not None and c.name != name:
                ctx.engine.rename(c.id, name)
        return {}


@dataclass(frozen=True)
class CreateContainer(Step):
    kind = "create"
    name: str
    image: str
    old_id: str
    options: dict[str, Any]                 # RunOptions as JSON

    def describe(self) -> str:
        return f"create {self.name} from {self.image} with the same mounts, ports and options"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from volmerge.runtime.options import RunOptions

        c = ctx.engine.create(RunOptions.from_json(self.options))
        tx.new_id = c.id
        return {"id": c.id}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return RemoveContainer(ref=data.get("id") or self.name, keep_id=self.old_id)


@dataclass(frozen=True)
class RemoveContainer(Step):
    """The reverse of a create: the container ``ref`` (its id, or its name
    when the create was cut short before recording one) is removed, unless
    ``ref`` names ``keep_id``, the container it succeeds."""

    kind = "remove-container"
    ref: str
    keep_id: str

    def describe(self) -> str:
        return f"remove {self.ref}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = find_container(ctx, self.ref)
        if c is not None and c.id != self.keep_id:
            ctx.engine.remove(c.id, force=True)
        return {}


@dataclass(frozen=True)
class TakeOverNetwork(Step):
    """The successor takes the old container's address and published ports."""

    kind = "takeover"
    old_id: str
    old_name: str
    name: str

    def describe(self) -> str:
        return f"hand {self.old_name}'s address and published ports to its successor"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        assert tx.new_id is not None, "takeover runs after create"
        ctx.network.takeover(self.old_id, tx.new_id)
        return {"new_id": tx.new_id}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return HandBackNetwork(from_ref=data.get("new_id") or self.name, to_id=self.old_id)


@dataclass(frozen=True)
class HandBackNetwork(Step):
    """The address and published ports of ``from_ref`` (a successor's id,
    or its name) go back to ``to_id``, if it has any."""

    kind = "hand-back-network"
    from_ref: str
    to_id: str

    def describe(self) -> str:
        return f"hand the address and published ports back to {self.to_id[:12]}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = find_container(ctx, self.from_ref)
        cid = c.id if c is not None else self.from_ref  # a removed container's leases keep its id
        if cid != self.to_id and ctx.network.leases(container_id=cid):
            ctx.network.disconnect(cid)
            ctx.network.takeover(cid, self.to_id)
        return {}


@dataclass(frozen=True)
class StartContainer(Step):
    kind = "start"
    name: str
    old_id: str
    timeout: float = 10.0

    def describe(self) -> str:
        return f"start the new {self.name}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        assert tx.new_id is not None, "start runs after create"
        ctx.engine.start(tx.new_id)
        return {"id": tx.new_id}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return StopAgain(ref=data.get("id") or self.name, keep_id=self.old_id, timeout=self.timeout)


@dataclass(frozen=True)
class StopAgain(Step):
    """The reverse of a start: ``ref`` stops, unless it is ``keep_id``."""

    kind = "stop-again"
    ref: str
    keep_id: str
    timeout: float = 10.0

    def describe(self) -> str:
        return f"stop {self.ref}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = find_container(ctx, self.ref)
        if c is not None and c.id != self.keep_id and c.state in ("running", "paused"):
            ctx.engine.stop(c.id, timeout=self.timeout)
        return {}


@dataclass(frozen=True)
class HealthCheck(Step):
    kind = "health"
    check: bool                             # a health check is configured (else: stay up)
    source: str
    timeout: float

    def describe(self) -> str:
        if self.check:
            return f"health check ({self.source}) until healthy, at most {self.timeout:g}s"
        return f"no health check: the new container must stay up for {self.timeout:g}s"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        assert tx.new_id is not None, "the health check runs after create"
        wait_healthy(ctx, tx.new_id, self.check, self.timeout)
        return {}


def wait_healthy(ctx: Ctx, cid: str, has_check: bool, timeout: float) -> None:
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


@dataclass(frozen=True)
class CloneVolume(Step):
    """A rehearsal's copy of a live volume: frozen layers shared (O(1)), the
    live layer copied while its users are paused; the live volume is left
    exactly as it was.  Undo (and the rehearsal's end) removes the clone."""

    kind = "clone"
    volume: str
    clone: str

    def describe(self) -> str:
        return f"clone volume {self.volume} as {self.clone} (frozen layers shared, live changes copied)"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        ctx.volumes.clone_live(self.volume, self.clone)
        return {}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return RemoveVolume(volume=self.clone)


@dataclass(frozen=True)
class RemoveVolume(Step):
    """The reverse of a clone: the clone is removed (its name was free when
    the rehearsal was planned, build.py)."""

    kind = "remove-volume"
    volume: str

    def describe(self) -> str:
        return f"remove volume {self.volume}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        import contextlib

        if ctx.volumes.exists(self.volume):
            ctx.volumes.remove(self.volume, force=True)
        # The clone's lock file, or every rehearsal leaves one behind (found by
        # bench/soak.py).  Unlinked while held: the name was the rehearsal's
        # own (random) and the volume is gone, so a waiter finds nothing to do.
        with ctx.store.lock(f"volume-{self.volume}"), contextlib.suppress(FileNotFoundError):
            (ctx.store.root / "locks" / f"volume-{self.volume}.lock").unlink()
        return {}
