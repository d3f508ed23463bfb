"""The merge staged from a copy when the serving snapshot finds the volume
busy (staging.py): a process of the old container holds a file on the
volume's mount (a database server, an application with SQLite open), so the
snapshot cannot swap the mount and the volume would be merged whole at the
switch, inside the downtime.

Instead the volume is cloned as it is *now* (``VolumeHistory.clone_live``:
the frozen layers shared, O(1); only the live layer's content — what changed
since the last snapshot — copied while the users are paused), the volume and
its mount left untouched.  The staged merge reads the clone; at the switch
(old container stopped, the live layer frozen by ``upgrade-J-pre``), the
paths the old version wrote since the copy are found by
:func:`changes_since_copy` and merged again as after a serving snapshot.

Which entries of the live layer changed since the copy: ctime, then
content.  The kernel sets an inode's ctime on every change of its data or
metadata (a write, chmod, chown, an xattr such as overlay's opaque mark, a
rename, a link) and userspace cannot set it; the copy records the ctime of a
file it made while the users were paused.  An entry whose ctime is before
that stamp and that the copy holds too is what the copy holds (skipped
without reading it); every other entry of either top layer — changed since,
new since (a whiteout or opaque directory included), or gone since — is a
candidate, and the candidates are compared exactly as the volume's own diff
compares two points of one stack (``volumes/diff.py``: kind, mode, owner,
content; a directory whose entries changed is not itself a change).  So the
list is the one a serving snapshot's diff would have given.  The stamp only
prunes; what it cannot vouch for is compared: a clock set back between the
copy and the switch (a second stamp taken at the switch is earlier) or a
stack changed below the live layer (a snapshot or compaction meanwhile)
means every entry is a candidate or, for the stack, the whole merge.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volmerge.runtime import fsutil
from volmerge.runtime.overlayfmt import is_opaque

from . import settings
from .steps import RemoveVolume, Step, Tx, fault, has_snapshot, resume

if TYPE_CHECKING:
    from ..volumes.model import Change
    from .ctx import Ctx

#: the label of the copy: the ctime (ns) stamped while the users were paused
STAMP = "volmerge.upgrade.copy-stamp"
#: the label naming the volume the copy was made of (a copy is only removed
#: when it carries it: a user's volume of the same name is never touched)
COPY_OF = "volmerge.upgrade.copy-of"


def copy_name(jid: str, volume: str) -> str:
    """The copy's volume name (deterministic, so that recovery finds it)."""
    return f"upgrade-{jid}-copy-{volume}"


class Unknown(Exception):
    """The changes since the copy cannot be listed: merge the whole volume."""


@dataclass(frozen=True)
class ServingCopy(Step):
    """When the serving snapshot found the volume busy: a copy of it, taken
    while the old container is paused, for the staged merge to read.
    Nothing when the snapshot was taken.  Undo (and the commit's finish)
    removes the copy; a copy cut short may have left the container paused:
    it runs again."""

    kind = "serving-copy"
    volume: str
    tag: str                                # the serving snapshot's tag
    copy: str
    container: str

    def describe(self) -> str:
        return (f"copy volume {self.volume} as {self.copy} if it was too busy to snapshot "
                "while the old version serves")

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from volmerge.runtime.errors import CodedError
        from volmerge.volumes.model import check_name

        from ..errors import BadInput

        if has_snapshot(ctx, self.volume, self.tag):
            return {"copy": None}
        try:
            check_name(self.copy)
        except BadInput:
            return {"copy": None, "skipped": "the volume's name is too long for a copy's"}
        if ctx.volumes.exists(self.copy):
            return {"copy": None, "skipped": f"volume {self.copy} exists"}
        limit = settings.serving_copy_max()
        live = next(la.path for la in ctx.volumes.get(self.volume, sizes=False).layers
                    if la.role == "live")
        if fsutil.dir_size(live, apparent=True, stop_above=limit) > limit:
            return {"copy": None, "skipped": (
                f"its live layer holds more than {limit >> 20} MiB: copying it would pause "
                "the old version too long (VOLMERGE_SERVING_COPY_MAX_MB)")}
        try:
            ctx.volumes.clone_live(self.volume, self.copy, pause=True, stamp=STAMP,
                                   labels={COPY_OF: self.volume})
        except (CodedError, OSError) as exc:
            # (a full disk, say): the container runs on (clone_live resumes
            # it); without a copy the volume is merged at the switch
            if not is_copy(ctx, self.volume, self.copy):
                return {"copy": None, "skipped": str(exc)}
        fault("serving-copy.made")
        return {"copy": self.copy}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return DropCopy(volume=self.volume, copy=self.copy,
                        unpause=self.container if "copy" not in data else "")


@dataclass(frozen=True)
class DropCopy(Step):
    """The reverse of a serving copy: the copy goes (when it is one: its
    labels say it is this volume's copy; a user's volume is never taken for
    it); ``unpause``: the copy was cut short, perhaps while the container
    was paused: it runs again."""

    kind = "drop-copy"
    volume: str
    copy: str
    unpause: str = ""

    def describe(self) -> str:
        return f"remove the copy {self.copy} of volume {self.volume}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if self.unpause:
            resume(ctx, self.unpause)
        drop_copy(ctx, self.volume, self.copy)
        return {}


def drop_copy(ctx: Ctx, volume: str, copy: str) -> None:
    """Remove the copy ``copy`` of ``volume`` if it is one (idempotent)."""
    if is_copy(ctx, volume, copy):
        RemoveVolume(volume=copy).apply(ctx, Tx())


def is_copy(ctx: Ctx, volume: str, copy: str) -> bool:
    """Whether ``copy`` is this upgrade's copy of ``volume``."""
    if not copy or not ctx.volumes.exists(copy):
        return False
    labels = ctx.volumes.get(copy, sizes=False).labels
    return labels.get(COPY_OF) == volume and STAMP in labels


# -- the changes since the copy --------------------------------------------------

def changes_since_copy(ctx: Ctx, volume: str, copy: str, at: str) -> list[Change]:
    """What the volume as of snapshot ``at`` holds that differs from the copy
    (the module doc says how); :class:`Unknown` when the two stacks differ
    below their top layers."""
    ours = ctx.volumes.stack(volume, at=at)
    theirs = ctx.volumes.stack(copy)[:-1]  # its live layer: empty, never mounted rw
    if len(ours) != len(theirs) or ours[:-1] != theirs[:-1]:
        raise Unknown("the volume's layers changed below the copied one")
    since = int(ctx.volumes.get(copy, sizes=False).labels[STAMP])
    if fsutil.ctime_now(ctx.store.path("tmp")) < since:
        since = -1  # the clock went back: every entry is compared
    return diff_tops(theirs, ours, since)


def diff_tops(a: list[Path], b: list[Path], since: int) -> list[Change]:
    """Changes from stack ``a`` to stack ``b`` (bottom first), which share
    every layer but their top ones; an entry of ``b``'s top with a ctime
    before ``since`` that ``a``'s top holds as well is unchanged."""
    from volmerge.volumes.diff import changes_among, resolve, subtree
    from volmerge.volumes.tree import walk

    a_top, b_top = list(reversed(a)), list(reversed(b))
    candidates: set[str] = set()
    for rel, st in walk(b[-1]):
        if st.st_ctime_ns < since and os.path.lexists(os.path.join(a[-1], rel)):
            continue
        candidates.add(rel)
    candidates.update(rel for rel, _ in walk(a[-1])
                      if not os.path.lexists(os.path.join(b[-1], rel)))
    for rel in list(candidates):
        # an entry that hides what is below it (a whiteout, a file, an opaque
        # directory) on one side: the other side's subtree there is compared
        for layer in (a[-1], b[-1]):
            if _hides(os.path.join(layer, rel)):
                for other in (a_top, b_top):
                    hit = resolve(other, rel)
                    if hit is not None and stat.S_ISDIR(hit[1].st_mode):
                        candidates.update(subtree(other, rel))
    return changes_among(a_top, b_top, candidates)


def _hides(path: str) -> bool:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not stat.S_ISDIR(st.st_mode) or is_opaque(path)
