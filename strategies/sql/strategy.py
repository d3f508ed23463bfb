"""The ``sql`` strategy: a database file in a volume is replayed, not merged.

base = the old image's seed database (schema base), ours = the live
database (its rows are carried), theirs = the new image's database (the
target schema; its rows win in bookkeeping tables and new tables).  Options
come from the policy's ``[sql]`` table and the rule's own ``options`` (the
rule wins), or a plain dict::

    [sql]
    rename = {"notes.body" = "notes.content"}
    defaults = {"notes.pinned" = "0"}
    allow_data_loss = false
    bookkeeping_tables = ["my_migrations"]
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from volmerge.strategies.base import Action, ConflictInfo, FileReport, MergeOptions
from volmerge.strategies.errors import BadInput, NotDone

from .readers import SQLITE_MAGIC

if TYPE_CHECKING:
    from .plan import ReplayPlan


def sql_options(opts: MergeOptions | dict[str, Any] | None) -> dict[str, Any]:
    """The [sql] table of the policy overlaid with the rule's options."""
    if opts is None:
        return {}
    raw = opts.options if isinstance(opts, MergeOptions) else dict(opts)
    out: dict[str, Any] = {}
    pol = raw.get("policy")
    if pol is not None and callable(getattr(pol, "table", None)):
        out.update(pol.table("sql"))
    elif isinstance(raw.get("sql"), dict):
        out.update(raw["sql"])
    out.update({k: v for k, v in raw.items() if k not in ("policy", "sql")})
    for key in ("rename", "defaults"):
        if key in out and not isinstance(out[key], dict):
            raise BadInput(f"[sql] {key} must be a table of \"TABLE.COLUMN\" = value")
    if "bookkeeping_tables" in out and not isinstance(out["bookkeeping_tables"], (list, tuple)):
        raise BadInput("[sql] bookkeeping_tables must be a list of table names")
    return out


class SqlReplayStrategy:
    name = "sql"

    def handles(self, path: str, sample: bytes) -> bool:
        return sample.startswith(SQLITE_MAGIC) or path.endswith(".sql")

    def merge_files(self, path: str, base: str | None, ours: str, theirs: str, out: str,
                    opts: MergeOptions) -> FileReport:
        """Replay ours into theirs' schema — unless one side is the base (or
        both sides are the same), when the answer is a copy (the conformance
        identities).  Inputs are frozen trees, possibly read-only mounts:
        they are opened immutable and nothing is written beside them."""
        from .plan import plan_replay
        from .replay import replay

        trivial = _trivial(base, ours, theirs)
        if trivial is not None:
            pick, action, note = trivial
            _copy_new(ours if pick == "ours" else theirs, out)
            return FileReport(path, action, self.name, [], [note] if note else [])
        try:
            o = sql_options(opts)
            with plan_replay(ours, schema=theirs, base=base, maps=o.get("rename"),
                             defaults={k: str(v) for k, v in (o.get("defaults") or {}).items()},
                             allow_data_loss=bool(o.get("allow_data_loss", False)),
                             bookkeeping=tuple(o.get("bookkeeping_tables") or ()),
                             frozen=True) as plan:
                notes = _summary(plan)
                if not plan.ok:
                    return self._conflict(path, ours, theirs, out, opts, plan.problems(), notes)
                result = replay(plan, out)
        except (NotDone, BadInput) as e:
            return self._conflict(path, ours, theirs, out, opts, [str(e)], [])
        notes.append(f"replayed {result.rows} rows into {len(result.tables)} tables, verified")
        return FileReport(path, "merged", self.name, [], notes)

    def _conflict(self, path: str, ours: str, theirs: str, out: str, opts: MergeOptions,
                  problems: list[str], notes: list[str]) -> FileReport:
        conflicts = [ConflictInfo(location=path, message=p) for p in problems]
        if opts.on_conflict in ("ours", "theirs"):
            shutil.copyfile(ours if opts.on_conflict == "ours" else theirs, out)
            action: Action = "kept-ours" if opts.on_conflict == "ours" else "took-theirs"
            return FileReport(path, action, self.name, conflicts,
                              notes + [f"replay not possible; on_conflict={opts.on_conflict}"])
        return FileReport(path, "conflict", self.name, conflicts, notes)


def same_bytes(a: str, b: str) -> bool:
    """Byte-identical files (sizes first, then 1 MB blocks)."""
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
    except OSError:
        return False
    if os.path.samefile(a, b):
        return True
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def _trivial(base: str | None, ours: str, theirs: str) -> tuple[str, Action, str] | None:
    """(side to copy, action, note) when no replay is needed, as in
    strategies.identity: same on both sides -> that; one side still the base
    -> the other side exactly."""
    from .readers import has_sidecar

    if any(has_sidecar(p) for p in (base, ours, theirs) if p):
        return None  # pages in a -wal/-journal: the files alone do not say what they hold
    if same_bytes(ours, theirs):
        changed = base is None or not same_bytes(base, ours)
        return "ours", "unchanged", "same change on both sides" if changed else ""
    if base is not None and same_bytes(base, theirs):
        return "ours", "unchanged", "only ours changed: the live database is kept as it is"
    if base is not None and same_bytes(base, ours):
        return "theirs", "took-theirs", "the live database was never written: the new one is taken"
    return None


def _copy_new(src: str, out: str) -> None:
    """Write ``out`` (which must not exist) complete or not at all."""
    from volmerge.runtime.atomicfile import AtomicFile

    with open(src, "rb") as s, AtomicFile(out, None, private=True) as f:
        while chunk := s.read(1 << 20):
            f.write(chunk)


def _summary(plan: ReplayPlan) -> list[str]:
    d = plan.merged.diff
    notes = []
    for label, items in (("tables added", d.tables_added), ("tables dropped", d.tables_dropped),
                         ("columns added", d.columns_added), ("columns dropped", d.columns_dropped),
                         ("kept from ours", d.tables_kept_from_ours + d.columns_kept_from_ours)):
        if items:
            notes.append(f"{label}: {', '.join(items)}")
    if d.columns_renamed:
        notes.append("renamed: " + ", ".join(f"{a} -> {b}" for a, b in d.columns_renamed.items()))
    if d.columns_retyped:
        notes.append("retyped: " + ", ".join(f"{a} ({b})" for a, b in d.columns_retyped.items()))
    return notes + list(plan.merged.notes)
