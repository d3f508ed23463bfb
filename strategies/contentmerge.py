"""A file both sides changed: which content strategy merges it (policy rule,
else detection order), and where the strategy's result goes (content in
memory, a file a strategy writes itself, or a whole-file pick).  Mixed into
the walk (strategies.walk.Walk), whose reporting and conflict handling it
uses."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING, Any

from volmerge.runtime import fsutil

from .base import ConflictInfo, FileReport, MergeOptions, detection_order, whole_file_pick
from .nodes import DirHandle, Node

if TYPE_CHECKING:
    from .policy import Policy, Rule
    from .writers import TreeWriter

MAX_CONTENT = 64 * 1024 * 1024  # bigger files are never loaded for a content merge


class ContentMerge:
    w: TreeWriter
    policy: Policy | None
    diff3: bool
    _consulted: dict[str, tuple[Rule | None, list[str]]]

    if TYPE_CHECKING:
        def _oc(self, rel: str) -> tuple[str, Any]: ...
        def _rep(self, fr: FileReport) -> None: ...
        def _fail(self) -> None: ...
        def _keep(self, rel: str, name: str, o: Node | None, od: DirHandle | None) -> None: ...
        def _beside(self, rel: str, name: str, t: Node, td: DirHandle | None,
                    taken: set[str]) -> None: ...

    def _strategy(self, rel: str, o: Node, t: Node) -> tuple[Any, MergeOptions, str]:
        from .registry import all_strategies, find_strategy, get_strategy

        oc, rule = self._oc(rel)
        opts = MergeOptions(on_conflict=oc, diff3=self.diff3,  # type: ignore[arg-type]
                            options=dict(rule.options) if rule else {})
        if self.policy is not None:
            opts.options["policy"] = self.policy  # a rule's options never stand in for it
        if rule is not None and rule.strategy:
            return get_strategy(rule.strategy), opts, f"policy rule {rule.glob!r}"
        note = rule.ignored_note("strategy") if rule is not None else None
        if note:
            self._consulted[rel][1].append(note)
        so, st = o.sample(), t.sample()
        for s in detection_order(all_strategies()):
            if s.handles(rel, so) and s.handles(rel, st):
                # the structured strategy says itself how it knew the format
                why = "" if s.name in ("structured", "sql") else \
                    f"{s.name}: detected (no structured format by name or content)"
                return s, opts, why
        s = find_strategy("binary")
        if s is None:
            from .whole import BinaryStrategy

            s = BinaryStrategy()
        return s, opts, "binary: not text, no format by name or content"

    def _content(self, rel: str, name: str, b: Node | None, o: Node, t: Node,
                 meta: tuple[int, int, int], od: DirHandle | None, td: DirHandle | None,
                 taken: set[str], notes: list[str], mconf: ConflictInfo | None) -> int:
        strat, opts, why = self._strategy(rel, o, t)
        sname = getattr(strat, "name", "?")
        whole, pick = whole_file_pick(strat)
        if whole or (not callable(getattr(strat, "merge_files", None))
                     and max(o.size, t.size, b.size if b else 0) > MAX_CONTENT):
            # whole-file decision: never load the content
            if not whole:
                notes.append(f"too large for {sname}: merged as a whole file")
                pick = None
                sname = "binary"
            return self._whole(rel, name, o, t, od, td, taken, meta, sname, pick, opts.on_conflict, notes)
        if callable(getattr(strat, "merge_files", None)):
            return self._file_strategy(rel, name, strat, opts, b, o, t, meta, od, td, taken,
                                       notes, mconf)
        res = strat.merge(rel, b.read() if b else None, o.read(), t.read(), opts)
        fr = res.report
        fr.path = rel
        fr.strategy = fr.strategy or sname
        fr.notes = notes + ([why] if why else []) + list(fr.notes)
        if mconf:
            fr.conflicts.insert(0, mconf)
        if res.content is None:
            if fr.action == "deleted":
                self.w.delete(rel, name, o)
                self._rep(fr)
                return 0
            self._rep(fr)
            self._fail()
            return 1
        if res.content == o.read() and meta == o.meta:
            self._keep(rel, name, o, od)
        elif res.content == t.read() and meta == t.meta:
            self.w.take(rel, name, t, td, o)
        else:
            self.w.content(rel, name, res.content, meta, o)
        extra = 0
        if fr.action == "kept-both":
            self._beside(rel, name, t, td, taken)
            extra = 1
        self._rep(fr)
        return 1 + extra

    def _file_strategy(self, rel: str, name: str, strat: Any, opts: MergeOptions, b: Node | None,
                       o: Node, t: Node, meta: tuple[int, int, int], od: DirHandle | None,
                       td: DirHandle | None, taken: set[str], notes: list[str],
                       mconf: ConflictInfo | None) -> int:
        """A strategy that works on files (databases): it reads the inputs by
        path and writes its result to a path the writer hands out."""
        scratch = None
        if self.w.active:
            out_path = self.w.file_out(rel, name)
        else:  # a conflict already stopped writing: still collect this file's report
            scratch = tempfile.mkdtemp(prefix="volmerge-scratch-")
            out_path = os.path.join(scratch, "out")
        try:
            fr = strat.merge_files(rel, path_of(b), path_of(o), path_of(t), out_path, opts)
            produced = os.path.lexists(out_path)
        finally:
            if scratch is not None:
                with contextlib.suppress(OSError):
                    fsutil.rmtree(scratch)
        fr.path = rel
        fr.strategy = fr.strategy or getattr(strat, "name", "?")
        fr.notes = notes + list(fr.notes)
        if mconf:
            fr.conflicts.insert(0, mconf)
        self._rep(fr)
        if fr.action == "conflict" and opts.on_conflict == "fail":
            self._fail()
            return 1
        if produced and scratch is None:
            self.w.finish_file(rel, name, meta)
        elif fr.action == "took-theirs":
            self.w.take(rel, name, t, td, o)
        elif fr.action == "deleted":
            self.w.delete(rel, name, o)
            return 0
        else:
            self._keep(rel, name, o, od)
        if fr.action == "kept-both":
            self._beside(rel, name, t, td, taken)
            return 2
        return 1

    def _whole(self, rel: str, name: str, o: Node, t: Node, od: DirHandle | None, td: DirHandle | None,
               taken: set[str], meta: tuple[int, int, int], sname: str, pick: str | None, oc: str,
               notes: list[str]) -> int:
        conflict = None
        if pick is None:
            conflict = ConflictInfo("whole file", "changed on both sides")
            pick = {"ours": "ours", "theirs": "theirs", "keep-both": "both", "markers": "both"}.get(oc)
            if pick is None:
                self._rep(FileReport(rel, "conflict", sname, [conflict], notes))
                self._fail()
                return 1
            if pick in ("ours", "theirs"):
                notes.append(f"conflict resolved: {pick}")
        conflicts = [conflict] if conflict else []
        if pick == "theirs":
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "took-theirs", sname, conflicts, notes))
            return 1
        self._keep(rel, name, o, od)
        if pick == "both":
            self._beside(rel, name, t, td, taken)
            self._rep(FileReport(rel, "kept-both", sname, conflicts, notes))
            return 2
        self._rep(FileReport(rel, "kept-ours", sname, conflicts, notes))
        return 1



def path_of(n: Node | None) -> str | None:
    """A path that reaches the node through its directory's descriptor."""
    if n is None:
        return None
    return f"/proc/self/fd/{n.dirfd}/{n.name}"
