"""The merge of one volume, and the summary of merge reports.

Shared by the upgrade's merge step, the rehearsal (the same step, aimed at a
clone) and the preview (which merges into nothing: the dry run lives in the
tree merge's writer, architecture.md, principle 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotDone

if TYPE_CHECKING:
    from volmerge.runtime.images import Image
    from volmerge.strategies.policy import Policy
    from volmerge.strategies.treereport import TreeReport

    from .ctx import Ctx


def merge_volume(ctx: Ctx, image: Image | None, volume: str, target: str, *, at: str | None,
                 out: Path, policy: Policy | None, on_conflict: str, dry_run: bool = False,
                 old_image: Image | None = None) -> dict[str, Any]:
    """Merge ``image``'s content at ``target`` into ``volume`` (as of snapshot
    ``at``), writing the changed paths to ``out``.  Returns the tree report as
    JSON; raises NotDone on a conflict with ``on_conflict="fail"``."""
    from volmerge.strategies.tree import MergeConflict, merge_trees

    from . import pgdata
    from .imageview import image_root, inside

    assert image is not None, "the new image is looked up before the merge"
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
    report: dict[str, Any] = rep.to_json()
    return report


def _first_conflict(report: TreeReport) -> str:
    for f in report.conflicts:
        loc = f"{f.path}"
        if f.conflicts:
            loc += f" ({f.conflicts[0].location}: {f.conflicts[0].message})"
        return loc
    return "?"


def summary(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts over the volumes' merge reports (conflicts, files, per action)."""
    out: dict[str, Any] = {"conflicts": 0, "files": 0}
    for rep in reports.values():
        s = rep.get("summary", {})
        for k, v in s.items():
            if isinstance(v, int):
                out[k] = out.get(k, 0) + v
        out["files"] += len(rep.get("files", []))
    return out
