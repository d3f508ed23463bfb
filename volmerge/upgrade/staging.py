"""The upgrade's steps while the old version still serves, and the merge's
finish at the switch (docs/architecture.md, "The data flow of an upgrade").

Before the stop: each volume is snapshotted with ``--pause`` semantics (the
live layer frozen under ``upgrade-J-prep``, O(1); the container frozen only
for the swap of its mount) and merged against that snapshot into a *staged*
upper layer, ``<root>/staged/J/<volume>``, while the old container serves.
At the switch, after the stop and the ``upgrade-J-pre`` snapshot, the layer
frozen between the two snapshots is exactly what the old version wrote in
the meantime; the volume's own diff lists it.  Nothing: the staged upper
becomes the new live layer (one rename).  Some paths: only those are merged
again (remerge.py) and spliced into the staged upper.  What cannot be split
path by path, or a volume that was not staged (a PostgreSQL data directory:
a running server writes all the time and ``pg_upgrade`` wants it stopped):
the whole merge at the switch, as before.

A volume the snapshot finds busy (a process of the old container holds a
file on it, so its mount cannot be swapped) is copied instead while the
container is paused (servingcopy.py: the frozen layers shared, the live
layer's content copied); the staged merge reads the copy, and at the switch
the paths written since the copy are found by comparing the live layer,
frozen by ``upgrade-J-pre``, with the copy's (ctime, then content).

Each step is journaled like the others (steps.py): undoing the serving
snapshot forgets its tag (the layers stay, squashed by the next compaction),
undoing a staged merge removes it.  A snapshot cut short while it swapped a
running container's mount cannot tell how far the swap went: its undo
restarts the container, which mounts the volume afresh.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volmerge.runtime import fsutil
from volmerge.runtime.atomicfile import fsync_dir
from volmerge.runtime.errors import CodedError

from ..errors import NotDone
from .servingcopy import is_copy
from .steps import Step, Tx, find_container, has_snapshot, resume

if TYPE_CHECKING:
    from .ctx import Ctx

STAGED = "staged"


#: what the switch would otherwise import inside the downtime window (measured:
#: the network's netlink library alone, ~100-230 ms in a cold CLI process)
SWITCH_MODULES = (
    "volmerge.runtime.network.links", "volmerge.runtime.spec", "volmerge.runtime.supervisor",
    "volmerge.runtime.cgroups", "volmerge.runtime.health", "volmerge.runtime.polling",
    "volmerge.volumes.diff", "volmerge.volumes.tree", "tenacity",
)


def warm() -> None:
    """Import, while the old version serves, the modules the switch uses
    (stop, snapshot, network hand-over, start, health check): the CLI
    imports lazily, and an import inside the switch is downtime."""
    import importlib

    for name in SWITCH_MODULES:
        importlib.import_module(name)


def prep_tag(jid: str) -> str:
    """The tag of the snapshot taken while the old version serves."""
    return f"upgrade-{jid}-prep"


def staged_dir(ctx: Ctx, jid: str, volume: str) -> Path:
    return ctx.store.root / STAGED / jid / volume


def drop_staged(ctx: Ctx, jid: str, volume: str | None = None) -> None:
    """Remove a staged upper (every one of ``jid`` when ``volume`` is None)
    and what an interrupted merge into it left beside it."""
    top = ctx.store.root / STAGED / jid
    if not top.is_dir():
        return
    for e in os.listdir(top):
        if volume is None or e == volume or e.startswith(f".{volume}.volmerge"):
            fsutil.rmtree(top / e)
    with contextlib.suppress(OSError):
        top.rmdir()


#: a serving snapshot that finds the volume busy (a file held open in the
#: container) tries again this many times, a little later each time
BUSY_TRIES = 6
BUSY_WAIT = 0.02


@dataclass(frozen=True)
class ServingSnapshot(Step):
    """Freeze the volume's live layer while its container serves (the
    container is paused for the swap only).  The swap needs the volume's
    mount free in the container: a process holding a file there (a request
    in flight, a database server's open files) makes it refuse, and after
    a few tries the volume is not snapshotted: it is copied instead
    (servingcopy.ServingCopy), or, failing that, merged at the switch, as
    without staging.  So does any other failure before the snapshot's
    commit (a freeze that fails under load), which changed nothing."""

    kind = "serving-snapshot"
    volume: str
    tag: str
    container: str                          # the old container's id
    timeout: float = 10.0

    def describe(self) -> str:
        return f"snapshot volume {self.volume} as {self.tag} while the old version serves"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        for attempt in range(BUSY_TRIES):
            try:
                snap = ctx.volumes.snapshot(self.volume, tag=self.tag, pause=True)
            except (CodedError, OSError) as exc:
                if self._taken(ctx):
                    raise  # committed, then failed (a remount): undone with a restart
                # refused before the commit (a busy mount; under load even the
                # cgroup freeze can fail): nothing changed, the container runs on
                resume(ctx, self.container)  # a pause the failed attempt left behind
                if attempt == BUSY_TRIES - 1:
                    return {"snapshot": None, "skipped": str(exc)}
                time.sleep(BUSY_WAIT * (attempt + 1))
            else:
                return {"snapshot": snap.id}
        raise AssertionError("unreachable")

    def _taken(self, ctx: Ctx) -> bool:
        return has_snapshot(ctx, self.volume, self.tag)

    def reverse(self, data: dict[str, Any]) -> Step | None:
        cut_short = "snapshot" not in data
        return ForgetSnapshot(volume=self.volume, tag=self.tag,
                              restart=self.container if cut_short else "", timeout=self.timeout)


@dataclass(frozen=True)
class ForgetSnapshot(Step):
    """The reverse of a serving snapshot: its tag goes (the layer stays in
    the stack, squashed by the next compaction).  ``restart``: the snapshot
    was cut short, perhaps between unmounting the volume in the container
    and mounting it again: the container, if it runs, restarts."""

    kind = "forget-snapshot"
    volume: str
    tag: str
    restart: str = ""
    timeout: float = 10.0

    def describe(self) -> str:
        return f"forget snapshot {self.tag} of volume {self.volume}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if ctx.volumes.exists(self.volume):
            ctx.volumes.untag(self.volume, {self.tag}, compact=False)
        c = find_container(ctx, self.restart) if self.restart else None
        if c is not None and c.state in ("running", "paused", "restarting"):
            ctx.engine.stop(c.id, timeout=self.timeout)
            ctx.engine.start(c.id, stop_timeout=self.timeout)
        return {}


@dataclass(frozen=True)
class PrepareStart(Step):
    """The successor's start prepared while the old version serves: what
    depends neither on the volumes' final data nor on the old container's
    address being free (``Engine.prestart``): its root file system mounted
    and, on a bridge network, its network namespace and veth made with
    ``ip`` (the old container's, handed over at the switch) configured
    inside, the veth off the bridge.  The start at the switch finds them
    made and puts the veth on the bridge.  The undo tears them down
    (``Engine.unprestart``); a crash before the undo leaves a preparer
    that died, which the next look at the container (and the network's
    reconciliation) tears down as well."""

    kind = "prepare-start"
    name: str
    old_id: str
    ip: str | None = None

    def describe(self) -> str:
        net = " and network namespace" if self.ip else ""
        return (f"prepare the new {self.name}'s start (its root file system{net}) "
                "while the old one serves")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        assert tx.new_id is not None, "the start is prepared after create"
        ctx.engine.prestart(tx.new_id, ip=self.ip)
        return {"id": tx.new_id}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return UnprepareStart(ref=data.get("id") or self.name, keep_id=self.old_id)


@dataclass(frozen=True)
class UnprepareStart(Step):
    """The reverse of a prepared start: what it prepared of ``ref`` (the
    successor's id, or its name when the step was cut short) is torn down,
    unless ``ref`` names ``keep_id`` or the container has started since."""

    kind = "unprepare-start"
    ref: str
    keep_id: str

    def describe(self) -> str:
        return f"undo the prepared start of {self.ref}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        c = find_container(ctx, self.ref)
        if c is not None and c.id != self.keep_id:
            ctx.engine.unprestart(c.id)
        return {}


@dataclass(frozen=True)
class StageMerge(Step):
    """The three-way merge against the serving snapshot ``at`` (or, when the
    volume was too busy to snapshot, against its serving copy ``copy``:
    servingcopy.py), into the staged upper; a PostgreSQL data directory is
    left to the switch."""

    kind = "stage-merge"
    volume: str
    target: str
    at: str
    image: str
    on_conflict: str
    jid: str
    copy: str = ""

    def describe(self) -> str:
        return (f"merge {self.image}:{self.target} into a staged layer for volume "
                f"{self.volume} ({self.on_conflict} on conflict) while the old version serves")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from volmerge.strategies.sql.pgmajor import read_version

        from .merge import merge_volume

        drop_staged(ctx, self.jid, self.volume)  # an interrupted attempt's leftovers
        src: str = self.volume
        at: str | None = self.at
        if not has_snapshot(ctx, self.volume, self.at):
            if not is_copy(ctx, self.volume, self.copy):
                return {"staged": False}  # busy, and no copy either
            src, at = self.copy, None
        out = staged_dir(ctx, self.jid, self.volume)
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with ctx.volumes.view(src, at=at) as ours:
            if read_version(ours) is not None:
                return {"staged": False}
        tx.reports[self.volume] = merge_volume(
            ctx, tx.new_image, src, self.target, at=at, out=out, policy=tx.policy,
            on_conflict=self.on_conflict, old_image=tx.old_image)
        return {"staged": True, "from": "snapshot" if at else "copy"}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return DropStaged(jid=self.jid, volume=self.volume)


@dataclass(frozen=True)
class DropStaged(Step):
    kind = "drop-staged"
    jid: str
    volume: str

    def describe(self) -> str:
        return f"remove the staged merge of volume {self.volume}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        drop_staged(ctx, self.jid, self.volume)
        return {}


@dataclass(frozen=True)
class FinishMerge(Step):
    """At the switch (old container stopped, ``at`` snapshotted): the staged
    upper becomes the volume's live layer, after the paths written since
    ``since`` are merged again; the whole merge when they cannot be split
    or nothing was staged.  No reverse of its own: undoing the ``at``
    snapshot drops the live layer, undoing the staging its leftovers."""

    kind = "finish-merge"
    volume: str
    target: str
    since: str
    at: str
    image: str
    on_conflict: str
    jid: str
    copy: str = ""

    def describe(self) -> str:
        return (f"finish the merge of volume {self.volume}: merge again what the old version "
                f"wrote since {self.since}")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        t0 = time.monotonic()
        out = ctx.volumes.live_upper(self.volume)
        staged = staged_dir(ctx, self.jid, self.volume)
        source: str | None = None
        if is_copy(ctx, self.volume, self.copy):
            source = "copy"
        elif has_snapshot(ctx, self.volume, self.since):
            source = "snapshot"
        if not staged.is_dir() or source is None:
            # (staged from a copy removed meanwhile, by a `volume prune`: the
            # changes since cannot be listed)
            why = "not staged" if not staged.is_dir() else "the serving copy is gone"
            how = self._whole(ctx, tx, out, why)
            source = None
        else:
            how = self._finish(ctx, tx, staged, out, source)
            if staged.is_dir():
                _install(staged, out)
        drop_staged(ctx, self.jid, self.volume)
        rep = tx.reports.setdefault(self.volume, {})
        rep["switch"] = {"merge": how, "seconds": round(time.monotonic() - t0, 4),
                         "staged_from": source}
        return {"how": how, "staged_from": source}

    def _finish(self, ctx: Ctx, tx: Tx, staged: Path, out: Path, source: str) -> str:
        """The staged upper completed with what was written since it was
        staged: listed by the volume's diff since the serving snapshot, or
        against the serving copy (servingcopy.py)."""
        from .servingcopy import Unknown, changes_since_copy

        since = "since"
        if source == "copy":
            since = "since the copy"
            try:
                changes = changes_since_copy(ctx, self.volume, self.copy, self.at)
            except Unknown as exc:
                return self._whole(ctx, tx, out, str(exc))
        else:
            changes = ctx.volumes.diff(self.volume, from_=self.since, to=self.at)
        if not changes:
            return f"staged merge used as is: nothing written {since}"
        return self._again(ctx, tx, staged, out, changes)

    def _whole(self, ctx: Ctx, tx: Tx, out: Path, why: str) -> str:
        from .merge import merge_volume

        drop_staged(ctx, self.jid, self.volume)
        tx.reports[self.volume] = merge_volume(
            ctx, tx.new_image, self.volume, self.target, at=self.at, out=out, policy=tx.policy,
            on_conflict=self.on_conflict, old_image=tx.old_image)
        return f"merged whole at the switch ({why})"

    def _again(self, ctx: Ctx, tx: Tx, staged: Path, out: Path, changes: list[Any]) -> str:
        from .imageview import image_root, inside
        from .remerge import Unsplittable, merge_paths, units

        assert tx.new_image is not None, "the new image is looked up before the merge"
        try:
            paths = units(changes)
            with image_root(ctx.store, tx.new_image) as root, \
                    ctx.volumes.view(self.volume, at=self.at) as ours, \
                    ctx.store.building("remerge-") as scratch:
                theirs = inside(root, self.target)
                if theirs is None:
                    raise Unsplittable(f"the new image has nothing at {self.target}")
                part = merge_paths(ctx.volumes.base_path(self.volume), ours, theirs, staged,
                                   scratch, paths, policy=tx.policy,
                                   on_conflict=self.on_conflict)
        except Unsplittable as exc:
            return self._whole(ctx, tx, out, f"{len(changes)} changed path(s): {exc}")
        except NotDone as exc:
            raise NotDone(f"volume {self.volume}: {exc}", **getattr(exc, "details", {})) from None
        _patch_report(tx.reports.setdefault(self.volume, {}), part, set(paths))
        return f"{len(changes)} changed path(s) merged again: {', '.join(c.path for c in changes[:5])}"


def _install(staged: Path, out: Path) -> None:
    """The staged upper replaces the (empty) live layer directory."""
    try:
        os.rename(staged, out)
    except OSError as exc:
        raise NotDone(f"cannot install the staged merge in {out}: {exc.strerror}") from None
    fsync_dir(out.parent)
    fsync_dir(staged.parent)


def _patch_report(rep: dict[str, Any], part: dict[str, Any], paths: set[str]) -> None:
    """The staged report with the entries of the paths merged again replaced."""
    for key in ("files", "sql"):
        kept = [e for e in rep.get(key, []) if e.get("path") not in paths]
        rep[key] = kept + list(part.get(key, []))
