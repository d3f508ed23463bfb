"""Three-way merge of directory trees.

Walks base, ours and theirs together (through directory descriptors, see
strategies.nodes), decides every path by the table in docs/merge.md,
dispatches paths changed on both sides to a content strategy, and hands each
decision to a writer (strategies.writers.TreeWriter).  Results land in a
sibling of ``out`` marked incomplete (runtime.incomplete: swept by the next
merge into the same place, or by the store, when a crash leaves it) that is
renamed into place at the end: all or nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volmerge.runtime import fsutil, incomplete, overlayfmt
from volmerge.runtime.atomicfile import fsync_dir

from .base import ACTIONS, ConflictInfo, FileReport, MergeOptions, detection_order, whole_file_pick
from .errors import BadInput, NotDone
from .nodes import (
    MAX_DEPTH,
    SMALL,
    DirHandle,
    Node,
    check_depth,
    content_equal,
    deep_equal,
    root_node,
    same,
)
from .policy import ON_CONFLICT, Policy, Rule
from .writers import DryWriter, FullWriter, TreeWriter, UpperWriter, WriterFactory

MAX_CONTENT = 64 * 1024 * 1024  # bigger files are never loaded for a content merge
PREFETCH_THREADS = 2
NEW_SUFFIX = ".volmerge-new"
Step = Generator["Step", int, int]  # a step of the walk: yields the steps it needs


@dataclass
class TreeReport:
    files: list[FileReport] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    diffs: dict[str, str] = field(default_factory=dict)
    written: bool = False
    dry_run: bool = False
    mode: str = "full"
    paths_written: int = 0

    @property
    def conflicts(self) -> list[FileReport]:
        """Files left with an unresolved conflict (not written, or written with markers)."""
        return [f for f in self.files if f.action == "conflict"]

    @property
    def summary(self) -> dict[str, int]:
        s: dict[str, int] = {"conflicts": len(self.conflicts)}
        s["resolved"] = sum(1 for f in self.files if f.conflicts and f.action != "conflict")
        for a in ACTIONS:
            s[a] = self.counts.get(a, 0)
        s["written"] = self.paths_written
        return s

    @property
    def sql(self) -> list[FileReport]:
        return [f for f in self.files if f.strategy == "sql"]

    def to_json(self) -> dict[str, Any]:
        files = []
        for f in self.files:
            d = f.to_json()
            if f.path in self.diffs:
                d["diff"] = self.diffs[f.path]
            files.append(d)
        return {"summary": self.summary, "files": files, "sql": [f.to_json() for f in self.sql],
                "written": self.written, "dry_run": self.dry_run, "mode": self.mode}


class MergeConflict(NotDone):
    """Conflicts with on_conflict='fail': nothing was written.  ``report``
    holds every conflict."""

    def __init__(self, report: TreeReport) -> None:
        n = len(report.conflicts)
        paths = ", ".join(f.path for f in report.conflicts[:3]) + (", ..." if n > 3 else "")
        super().__init__(f"{n} conflict{'s' if n != 1 else ''} ({paths}); nothing written "
                         "(choose --on-conflict ours|theirs|markers|keep-both or a policy rule)")
        self.report = report


def _m3(b: Any, o: Any, t: Any, has_base: bool) -> tuple[Any, bool]:
    """Three-way choice of one value: (result, conflict)."""
    if o == t:
        return o, False
    if has_base and b == o:
        return t, False
    if has_base and b == t:
        return o, False
    return o, has_base


class _Walk:
    def __init__(self, policy: Policy | None, on_conflict: str, diff3: bool, writer: TreeWriter,
                 report: TreeReport) -> None:
        self.policy = policy
        self.on_conflict = on_conflict
        self.diff3 = diff3
        self.w = writer
        self.report = report
        self.unresolved = 0
        self._pool: Any = None
        # per path: the policy rule consulted (None: none matched) and the
        # image requests ignored there; moved onto the path's report by _rep
        self._consulted: dict[str, tuple[Rule | None, list[str]]] = {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- reporting --------------------------------------------------------
    def _rep(self, fr: FileReport) -> None:
        used = self._consulted.pop(fr.path, None)
        if used is not None:
            rule, ignored = used
            if rule is not None:
                fr.policy, fr.rule = rule.source or "policy", rule.glob
                note = rule.ignored_note("on_conflict")
                if note and fr.conflicts:
                    ignored.append(note)
            fr.overridden = ignored
            fr.notes.extend(ignored)
        self.report.counts[fr.action] += 1
        if fr.action != "unchanged" or fr.conflicts or fr.notes:
            self.report.files.append(fr)

    def _unchanged(self, rel: str, note: str | None = None) -> None:
        if note:
            self._rep(FileReport(rel, "unchanged", "tree", notes=[note]))
        else:
            self.report.counts["unchanged"] += 1

    def _fail(self) -> None:
        self.unresolved += 1
        self.w.active = False

    def _oc(self, rel: str) -> tuple[str, Any]:
        """The on_conflict for ``rel`` and the rule that decides it; every
        decision that a policy can change asks here, which is how the report
        knows which policy decided the path."""
        rule = self.policy.rule_for(rel) if self.policy is not None else None
        self._consulted.setdefault(rel, (rule, []))
        return (rule.on_conflict if rule and rule.on_conflict else self.on_conflict), rule

    # -- the walk ---------------------------------------------------------
    # The walk's steps that descend (dir, entry, _dir_entry, _recurse) are
    # generators: where they would call each other they yield the call, and
    # _run() drives them with an explicit stack, so depth costs no recursion.
    def dir(self, rel: str, b: DirHandle | None, o: DirHandle | None, t: DirHandle | None) -> Step:
        """Merge the children of one directory; returns how many remain."""
        names: set[str] = set()
        for h in (b, o, t):
            if h is not None:
                names.update(h.entries)
        taken = set(names)
        self._prefetch(names, b, o, t)
        remain = 0
        for name in sorted(names):
            bn = b.entries.get(name) if b else None
            on = o.entries.get(name) if o else None
            tn = t.entries.get(name) if t else None
            crel = f"{rel}/{name}" if rel else name
            remain += yield self.entry(crel, name, bn, on, tn, b, o, t, taken)
        return remain

    def _prefetch(self, names: set[str], *handles: DirHandle | None) -> None:
        """Read in parallel the small files whose equality must be checked by
        content (same size on two sides): open/read release the GIL, and on
        a tree of 10,000 unchanged files this is most of the walk."""
        todo: list[Node] = []
        for name in names:
            nodes = [h.entries.get(name) for h in handles if h is not None]
            files = [n for n in nodes if n is not None and n.kind == "file" and n.size <= SMALL]
            sizes = [n.size for n in files]
            todo.extend(n for n in files if sizes.count(n.size) > 1)
        if len(todo) < 64:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=PREFETCH_THREADS)
        for _ in self._pool.map(_digest_quiet, todo, chunksize=32):
            pass

    def entry(self, rel: str, name: str, b: Node | None, o: Node | None, t: Node | None,
              bd: DirHandle | None, od: DirHandle | None, td: DirHandle | None, taken: set[str]) -> Step:
        kb, ko, kt = (n.kind if n else None for n in (b, o, t))
        if ko == "dir" or kt == "dir":
            return (yield self._dir_entry(rel, name, b, o, t, bd, od, td, taken))
        # neither side is a directory (base may be one)
        if same(o, t):
            self.w.keep(rel, name, o, od)
            self._unchanged(rel, None if same(b, o) else "same change on both sides")
            return int(o is not None)
        if same(b, t):
            self.w.keep(rel, name, o, od)
            self._unchanged(rel)
            return int(o is not None)
        if same(b, o):
            if t is None:
                self.w.delete(rel, name, o)
                self._rep(FileReport(rel, "deleted", "tree"))
                return 0
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "added" if o is None else "took-theirs", "tree"))
            return 1
        # both changed, differently
        if o is None or t is None:
            what = "deleted in ours, changed in theirs" if o is None else "changed in ours, deleted in theirs"
            return self._conflict(rel, name, o, t, od, td, taken, ConflictInfo("delete/modify", what))
        if ko != kt:
            return self._conflict(rel, name, o, t, od, td, taken,
                                  ConflictInfo("type", f"{ko} in ours, {kt} in theirs"))
        if ko == "file":
            return self._files(rel, name, b if kb == "file" else None, b, o, t, od, td, taken)
        if not content_equal(o, t):
            what = (f"symlink target: ours -> {o.target()!r}, theirs -> {t.target()!r}" if ko == "link"
                    else "device numbers or file type differ")
            return self._conflict(rel, name, o, t, od, td, taken, ConflictInfo(ko, what))
        # same link target / device, ownership changed on both sides
        meta, conf = self._meta(rel, b, o, t)
        if conf:
            return self._conflict(rel, name, o, t, od, td, taken, conf)
        if meta == t.meta:
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "took-theirs", "tree", notes=["ownership from theirs"]))
        else:
            self.w.keep(rel, name, o, od)
            self._unchanged(rel)
        return 1

    def _meta(self, rel: str, b: Node | None, o: Node, t: Node) -> tuple[tuple[int, int, int], ConflictInfo | None]:
        has = b is not None and b.kind == o.kind
        bm = b.meta if b is not None else (0, 0, 0)
        out, conflict = [], []
        for i, label in enumerate(("mode", "owner", "group")):
            v, c = _m3(bm[i], o.meta[i], t.meta[i], has)
            out.append(v)
            if c:
                conflict.append(label)
        if conflict:
            return o.meta, ConflictInfo(", ".join(conflict), "changed on both sides",
                                        _fmt_meta(o.meta), _fmt_meta(t.meta), _fmt_meta(bm) if has else None)
        return (out[0], out[1], out[2]), None

    # -- both sides are regular files ---------------------------------------
    def _files(self, rel: str, name: str, bf: Node | None, b: Node | None, o: Node, t: Node,
               od: DirHandle | None, td: DirHandle | None, taken: set[str]) -> int:
        meta, mconf = self._meta(rel, b, o, t)
        notes: list[str] = []
        if mconf is not None:
            oc, _ = self._oc(rel)
            meta = t.meta if oc == "theirs" else o.meta
            if oc == "fail":
                self._rep(FileReport(rel, "conflict", "tree", [mconf]))
                self._fail()
                return 1
            notes.append(f"{mconf.location} conflict resolved: {'theirs' if oc == 'theirs' else 'ours'}")
        if content_equal(o, t) or (bf is not None and content_equal(bf, t)):
            src = o
        elif bf is not None and content_equal(bf, o):
            src = t
        else:
            return self._content(rel, name, bf, o, t, meta, od, td, taken, notes, mconf)
        if src is o and meta == o.meta:
            self.w.keep(rel, name, o, od)
            self._rep(FileReport(rel, "unchanged", "tree", [mconf] if mconf else [], notes))
        elif src is t and meta == t.meta:
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "took-theirs", "tree", [mconf] if mconf else [], notes))
        else:
            data = src.read()
            self.w.content(rel, name, data, meta, o)
            self._rep(FileReport(rel, "merged", "tree", [mconf] if mconf else [],
                                 notes + ["content from " + ("ours" if src is o else "theirs") + ", metadata merged"]))
        return 1

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
            self.w.keep(rel, name, o, od)
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
            fr = strat.merge_files(rel, _path_of(b), _path_of(o), _path_of(t), out_path, opts)
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
            self.w.keep(rel, name, o, od)
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
        self.w.keep(rel, name, o, od)
        if pick == "both":
            self._beside(rel, name, t, td, taken)
            self._rep(FileReport(rel, "kept-both", sname, conflicts, notes))
            return 2
        self._rep(FileReport(rel, "kept-ours", sname, conflicts, notes))
        return 1

    # -- conflicts that no content strategy can resolve ---------------------
    def _conflict(self, rel: str, name: str, o: Node | None, t: Node | None, od: DirHandle | None,
                  td: DirHandle | None, taken: set[str], info: ConflictInfo) -> int:
        oc, _ = self._oc(rel)
        if oc == "fail":
            self._rep(FileReport(rel, "conflict", "tree", [info]))
            self._fail()
            return 1
        if oc == "theirs":
            if t is None:
                self.w.delete(rel, name, o)
                self._rep(FileReport(rel, "deleted", "tree", [info], ["conflict resolved: theirs"]))
                return 0
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "took-theirs", "tree", [info], ["conflict resolved: theirs"]))
            return 1
        self.w.keep(rel, name, o, od)
        if oc == "ours" or t is None:
            self._rep(FileReport(rel, "kept-ours", "tree", [info], ["conflict resolved: ours"]))
            return int(o is not None)
        self._beside(rel, name, t, td, taken)
        self._rep(FileReport(rel, "kept-both", "tree", [info]))
        return int(o is not None) + 1

    def _beside(self, rel: str, name: str, t: Node, td: DirHandle | None, taken: set[str]) -> None:
        """keep-both: theirs goes next to ours as NAME.volmerge-new (dpkg's .dpkg-dist)."""
        new = name + NEW_SUFFIX
        n = 1
        while new in taken:
            new = f"{name}{NEW_SUFFIX}.{n}"
            n += 1
        taken.add(new)
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        nrel = f"{parent}/{new}" if parent else new
        self.w.take(nrel, new, t, td, None)

    # -- directories --------------------------------------------------------
    def _dir_entry(self, rel: str, name: str, b: Node | None, o: Node | None, t: Node | None,
                   bd: DirHandle | None, od: DirHandle | None, td: DirHandle | None, taken: set[str]) -> Step:
        kb, ko, kt = (n.kind if n else None for n in (b, o, t))
        if ko in ("dir", None) and kt in ("dir", None) and kb in ("dir", None):
            if ko is None and kb is None:
                # added by theirs
                return (yield self._recurse(rel, name, None, None, t, bd, od, td))
            if kt is None and kb is None:
                self.w.keep(rel, name, o, od)  # added by ours
                self._unchanged(rel)
                return 1
            return (yield self._recurse(rel, name, b, o, t, bd, od, td))
        # a directory against something else (or a base of another kind)
        if ko == "dir" and kt == "dir":  # base was a file/link: both replaced it by a directory
            return (yield self._recurse(rel, name, None, o, t, None, od, td))
        if ko == "dir":
            ours_same = kb == "dir" and self._deep(b, o, bd, od)
            if kt is not None and ours_same:
                self.w.take(rel, name, t, td, o)
                self._rep(FileReport(rel, "took-theirs", "tree", notes=[f"directory replaced by a {kt}"]))
                return 1
            if kb is not None and kb != "dir" and t is not None and same(b, t):
                self.w.keep(rel, name, o, od)
                self._unchanged(rel)
                return 1
            if kt is None:  # base is a file/link: ours made it a directory, theirs deleted it
                return self._conflict(rel, name, o, t, od, td, taken,
                                      ConflictInfo("delete/modify", "directory in ours, deleted in theirs"))
            return self._conflict(rel, name, o, t, od, td, taken,
                                  ConflictInfo("type", f"directory in ours, {kt} in theirs"))
        # theirs is a directory, ours is not
        if same(b, o) and (kb != "dir"):
            return (yield self._recurse(rel, name, None, None, t, None, None, td, replaces=o))
        if kb == "dir" and o is not None and self._deep(b, t, bd, td):
            self.w.keep(rel, name, o, od)
            self._unchanged(rel)
            return 1
        if o is None:
            return self._conflict(rel, name, o, t, od, td, taken,
                                  ConflictInfo("delete/modify", "deleted in ours, directory in theirs"))
        return self._conflict(rel, name, o, t, od, td, taken,
                              ConflictInfo("type", f"{ko} in ours, directory in theirs"))

    def _deep(self, x: Node | None, y: Node | None, xd: DirHandle | None, yd: DirHandle | None) -> bool:
        if x is None or y is None or xd is None or yd is None or not same(x, y):
            return False
        a, b = xd.child(x), yd.child(y)
        try:
            return deep_equal(a, b)
        finally:
            a.close()
            b.close()

    def _recurse(self, rel: str, name: str, b: Node | None, o: Node | None, t: Node | None,
                 bd: DirHandle | None, od: DirHandle | None, td: DirHandle | None,
                 replaces: Node | None = None) -> Step:
        """Both sides have a directory here, or one side has and the other
        deleted it: merge child by child (git's behaviour)."""
        check_depth(o or t or b)  # type: ignore[arg-type]
        if o is not None and t is not None:
            meta, mconf = self._meta(rel, b if b and b.kind == "dir" else None, o, t)
            if mconf is not None:
                oc, _ = self._oc(rel)
                if oc == "fail":
                    self._rep(FileReport(rel, "conflict", "tree", [mconf]))
                    self._fail()
                else:
                    meta = t.meta if oc == "theirs" else o.meta
                    self._rep(FileReport(rel, "merged", "tree", [mconf], [f"conflict resolved: {oc}"]))
            elif meta != o.meta:
                self._rep(FileReport(rel + "/", "merged", "tree", notes=["directory metadata from theirs"]))
        else:
            meta = (o or t).meta  # type: ignore[union-attr]
        src = o if o is not None and meta == o.meta else (t or o)
        handles: list[DirHandle] = []
        try:
            cb = bd.child(b) if b is not None and bd is not None else None
            if cb:
                handles.append(cb)
            co = od.child(o) if o is not None and od is not None else None
            if co:
                handles.append(co)
            ct = td.child(t) if t is not None and td is not None else None
            if ct:
                handles.append(ct)
            srcd = co if src is o else ct
            self.w.begin_dir(rel, name, meta, src, srcd, replaces if replaces is not None else o)
            n = yield self.dir(rel, cb, co, ct)
            # a directory vanishes only when one side deleted it and nothing is left in it
            remains = n > 0 or b is None or (o is not None and t is not None)
            self.w.end_dir(remains)
            return int(remains)
        finally:
            for h in handles:
                h.close()


def _run(step: Step) -> int:
    """Drive a walk step and every step it yields, depth first, with an
    explicit stack of generators instead of the call stack; an exception goes
    up through each waiting step (so their ``finally`` close descriptors)."""
    stack = [step]
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is not None:
                exc, error = error, None
                sub = stack[-1].throw(exc)
            else:
                sub = stack[-1].send(value)
        except StopIteration as stop:
            stack.pop()
            if not stack:
                return stop.value  # type: ignore[no-any-return]
            value = stop.value
            continue
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting step
            stack.pop()
            if not stack:
                raise
            error = exc
            continue
        stack.append(sub)
        value = None


@contextlib.contextmanager
def _descriptors(need: int) -> Iterator[None]:
    """The walk holds about four descriptors per level of depth (three sides
    and the writer): raise the soft RLIMIT_NOFILE (never above the hard one)
    while it runs, so MAX_DEPTH levels fit where the soft limit is 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _digest_quiet(n: Node) -> None:
    """Prefetch: an unreadable file is reported later, by the walk itself."""
    try:
        n.digest()
    except BadInput:
        pass


def _fmt_meta(m: tuple[int, int, int]) -> str:
    return f"{m[0]:04o} {m[1]}:{m[2]}"


def _path_of(n: Node | None) -> str | None:
    if n is None:
        return None
    return f"/proc/self/fd/{n.dirfd}/{n.name}"


def _kind(p: Path) -> str:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise BadInput(f"{p} does not exist") from None
    except OSError as exc:
        raise BadInput(f"cannot use {p}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise BadInput(f"{p} is neither a regular file nor a directory")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def merge_trees(base: Path | str | None, ours: Path | str, theirs: Path | str, out: Path | str, *,
                policy: Policy | None = None, on_conflict: str = "fail", mode: str = "full",
                dry_run: bool = False, diff: bool = False, diff3: bool = False,
                writer: WriterFactory | None = None) -> TreeReport:
    """Merge three trees (or three files) into ``out``.

    mode="full": ``out`` (missing or an empty directory) receives the whole result.
    mode="upper": ``out`` receives only what differs from ``ours``, as an overlay
    upper layer (whiteouts, opaque directories: runtime.overlayfmt).  ``writer``
    replaces either: a factory for the TreeWriter that fills the (empty)
    directory it is given, renamed to ``out`` when the merge succeeds.  With
    on_conflict="fail" any conflict raises MergeConflict and nothing is
    written.  BadInput for unusable input; ``dry_run`` writes nothing
    (``diff`` adds unified diffs ours -> result).
    """
    if on_conflict not in ON_CONFLICT:
        raise BadInput(f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
    if mode not in ("full", "upper"):
        raise BadInput("mode must be 'full' or 'upper'")
    paths = {"ours": Path(ours), "theirs": Path(theirs)}
    if base is not None:
        paths["base"] = Path(base)
    kinds = {side: _kind(p) for side, p in paths.items()}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{s} is a {'directory' if k == 'dir' else 'file'}" for s, k in kinds.items())
        raise BadInput(f"BASE, OURS and THEIRS must all be files or all directories ({desc})")
    is_dir = kinds["ours"] == "dir"
    outp = Path(os.path.abspath(out))
    if not dry_run:
        _check_out(outp, paths, is_dir)
    report = TreeReport(dry_run=dry_run, mode=mode)
    if dry_run:
        _merge_into(DryWriter(diff), report, paths, is_dir, outp, policy, on_conflict, diff3)
        return report
    if writer is None:
        writer = _upper_writer if mode == "upper" and is_dir else FullWriter
    prefix = f".{outp.name}.volmerge"
    incomplete.sweep(outp.parent, prefix=prefix)  # what a crashed merge into out left
    with incomplete.building(outp.parent, prefix) as tmp:
        w = writer(str(tmp))
        _merge_into(w, report, paths, is_dir, outp, policy, on_conflict, diff3)
        if is_dir:
            os.rename(tmp, outp)  # replaces an empty directory atomically
        else:
            _place_single(str(tmp), outp)
    fsync_dir(outp.parent)
    report.written = True
    return report


def _upper_writer(root: str) -> TreeWriter:
    return UpperWriter(root, overlayfmt)


def _check_out(outp: Path, paths: dict[str, Path], is_dir: bool) -> None:
    if os.path.lexists(outp):
        if not outp.is_dir() or outp.is_symlink():
            raise BadInput(f"output {outp} already exists")
        if any(os.scandir(outp)):
            raise BadInput(f"output directory {outp} is not empty")
        if not is_dir:
            raise BadInput(f"output {outp} already exists")
    elif not outp.parent.is_dir():
        raise BadInput(f"output directory {outp.parent} does not exist")
    for side, p in paths.items():
        rp = p.resolve()
        if _inside(outp, rp) or _inside(rp, outp):
            raise BadInput(f"output {outp} overlaps {side} {p}")


def _merge_into(writer: TreeWriter, report: TreeReport, paths: dict[str, Path], is_dir: bool,
                outp: Path, policy: Policy | None, on_conflict: str, diff3: bool) -> None:
    """The walk through ``writer``: closed when done, aborted on a conflict
    (MergeConflict) or any error."""
    walk = _Walk(policy, on_conflict, diff3, writer, report)
    try:
        if is_dir:
            with _descriptors(5 * MAX_DEPTH + 1024):
                _merge_dirs(walk, paths, writer)
        else:
            _merge_single(walk, paths, outp.name)
        if walk.unresolved and not report.dry_run:
            writer.abort()
            raise MergeConflict(report)
        writer.close()
        report.paths_written = writer.written
        if isinstance(writer, DryWriter):
            report.diffs = writer.diffs
    except BaseException:
        writer.abort()
        raise
    finally:
        walk.close()


def _merge_dirs(walk: _Walk, paths: dict[str, Path], writer: TreeWriter) -> None:
    handles = {s: DirHandle.open_root(s, str(p)) for s, p in paths.items()}
    try:
        b, o, t = handles.get("base"), handles["ours"], handles["theirs"]
        ro, rt = os.fstat(o.fd), os.fstat(t.fd)
        rb = os.fstat(b.fd) if b else None
        meta, _c = _m3(
            (stat.S_IMODE(rb.st_mode), rb.st_uid, rb.st_gid) if rb else None,
            (stat.S_IMODE(ro.st_mode), ro.st_uid, ro.st_gid),
            (stat.S_IMODE(rt.st_mode), rt.st_uid, rt.st_gid), rb is not None)
        _run(walk.dir("", b, o, t))
        if walk.w.active:
            writer.set_root_meta(meta, None)
            rootfd = getattr(writer, "rootfd", -1)
            if rootfd >= 0:
                os.utime(rootfd, ns=(ro.st_atime_ns, ro.st_mtime_ns))
    finally:
        for h in handles.values():
            h.close()


def _merge_single(walk: _Walk, paths: dict[str, Path], name: str) -> None:
    nodes, fds = {}, []
    try:
        for s, p in paths.items():
            n, fd = root_node(s, str(p))
            n.side, n.rel = s, p.name
            nodes[s], _ = n, fds.append(fd)
        b, o, t = nodes.get("base"), nodes["ours"], nodes["theirs"]
        for n in nodes.values():
            n.name = os.path.basename(str(paths[n.side]))
            n.rel = name
        _run(walk.entry(name, name, b, o, t, None, None, None, {name}))
    finally:
        for fd in fds:
            os.close(fd)


def _place_single(tmp: str, outp: Path) -> None:
    for entry in sorted(os.listdir(tmp)):
        target = outp if entry == outp.name else outp.with_name(outp.name + entry[len(outp.name):])
        if os.path.lexists(target):
            raise BadInput(f"output {target} already exists")
        os.rename(os.path.join(tmp, entry), target)
