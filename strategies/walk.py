"""The walk of a three-way tree merge: base, ours and theirs side by side,
one directory at a time (through descriptors, strategies.nodes), every path
decided by the table in docs/merge.md and handed to the writer
(strategies.writers.TreeWriter); a file changed on both sides goes to a
content strategy (strategies.contentmerge).  Deep trees cost no recursion:
the steps are generators driven by ``drive``."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .base import ConflictInfo, FileReport
from .contentmerge import ContentMerge
from .errors import BadInput
from .nodes import (
    SMALL,
    DirHandle,
    Node,
    check_depth,
    content_equal,
    deep_equal,
    same,
)
from .policy import Policy, Rule
from .treereport import TreeReport
from .writers import TreeWriter

PREFETCH_THREADS = 2
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")  # SQLite's files beside a database
SQLITE_MAGIC = b"SQLite format 3\x00"
NEW_SUFFIX = ".volmerge-new"
Step = Generator["Step", int, int]  # a step of the walk: yields the steps it needs


def merge_value(b: Any, o: Any, t: Any, has_base: bool) -> tuple[Any, bool]:
    """Three-way choice of one value: (result, conflict)."""
    if o == t:
        return o, False
    if has_base and b == o:
        return t, False
    if has_base and b == t:
        return o, False
    return o, has_base


class Walk(ContentMerge):
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
        self._keeps = 0  # how many entries were kept as ours has them (see dir)

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

    def _keep(self, rel: str, name: str, o: Node | None, od: DirHandle | None) -> None:
        self._keeps += 1
        self.w.keep(rel, name, o, od)

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
    # drive() drives them with an explicit stack, so depth costs no recursion.
    def dir(self, rel: str, b: DirHandle | None, o: DirHandle | None, t: DirHandle | None) -> Step:
        """Merge the children of one directory; returns how many remain."""
        names: set[str] = set()
        for h in (b, o, t):
            if h is not None:
                names.update(h.entries)
        taken = set(names)
        self._prefetch(names, b, o, t)
        dbs = _with_sidecars(o)
        replaced: set[str] = set()  # databases of ``dbs`` whose result is not ours' file
        remain = 0
        for name in sorted(names):  # a database sorts before its sidecars
            bn = b.entries.get(name) if b else None
            on = o.entries.get(name) if o else None
            tn = t.entries.get(name) if t else None
            crel = f"{rel}/{name}" if rel else name
            db = _sidecar_of(name)
            if on is not None and db in replaced:
                self.w.delete(crel, name, on)
                self._rep(FileReport(crel, "deleted", "tree", notes=[
                    f"SQLite's {name[len(db):]} of {db}, whose pages are in the merged database"]))
                continue
            keeps = self._keeps
            remain += yield self.entry(crel, name, bn, on, tn, b, o, t, taken)
            if name in dbs and self._keeps == keeps:
                replaced.add(name)
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
            self._keep(rel, name, o, od)
            self._unchanged(rel, None if same(b, o) else "same change on both sides")
            return int(o is not None)
        if same(b, t):
            self._keep(rel, name, o, od)
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
            return self._conflict(rel, name, o, t, od, td, taken, ConflictInfo(o.kind, what))
        # same link target / device, ownership changed on both sides
        meta, conf = self._meta(rel, b, o, t)
        if conf:
            return self._conflict(rel, name, o, t, od, td, taken, conf)
        if meta == t.meta:
            self.w.take(rel, name, t, td, o)
            self._rep(FileReport(rel, "took-theirs", "tree", notes=["ownership from theirs"]))
        else:
            self._keep(rel, name, o, od)
            self._unchanged(rel)
        return 1

    def _meta(self, rel: str, b: Node | None, o: Node, t: Node) -> tuple[tuple[int, int, int], ConflictInfo | None]:
        has = b is not None and b.kind == o.kind
        bm = b.meta if b is not None else (0, 0, 0)
        out, conflict = [], []
        for i, label in enumerate(("mode", "owner", "group")):
            v, c = merge_value(bm[i], o.meta[i], t.meta[i], has)
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
            self._keep(rel, name, o, od)
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
        self._keep(rel, name, o, od)
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
                self._keep(rel, name, o, od)  # added by ours
                self._unchanged(rel)
                return 1
            return (yield self._recurse(rel, name, b, o, t, bd, od, td))
        # a directory against something else (or a base of another kind)
        if ko == "dir" and kt == "dir":  # base was a file/link: both replaced it by a directory
            return (yield self._recurse(rel, name, None, o, t, None, od, td))
        if ko == "dir":
            ours_same = kb == "dir" and self._deep(b, o, bd, od)
            if t is not None and ours_same:
                self.w.take(rel, name, t, td, o)
                self._rep(FileReport(rel, "took-theirs", "tree", notes=[f"directory replaced by a {kt}"]))
                return 1
            if kb is not None and kb != "dir" and t is not None and same(b, t):
                self._keep(rel, name, o, od)
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
            self._keep(rel, name, o, od)
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


def _sidecar_of(name: str) -> str | None:
    """The database whose -journal/-wal/-shm ``name`` would be."""
    for sfx in SQLITE_SIDECARS:
        if name.endswith(sfx) and len(name) > len(sfx):
            return name[: -len(sfx)]
    return None


def _with_sidecars(o: DirHandle | None) -> set[str]:
    """Ours' SQLite databases in this directory with a -journal/-wal/-shm
    beside them.  Those files hold pages of ours' database file only: a hot
    journal rolled back, or a WAL replayed, onto a merged (replayed) or taken
    database would turn it back into ours' pages.  When the result is not
    ours' file kept as is, they are not carried (the replay read them)."""
    if o is None:
        return set()
    found: set[str] = set()
    for name in o.entries:
        db = _sidecar_of(name)
        n = o.entries.get(db) if db is not None else None
        if db is None or n is None or n.kind != "file" or db in found:
            continue
        try:
            if n.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                found.add(db)
        except BadInput:
            pass
    return found


def drive(step: Step) -> int:
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
                return stop.value
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



def _digest_quiet(n: Node) -> None:
    """Prefetch: an unreadable file is reported later, by the walk itself."""
    try:
        n.digest()
    except BadInput:
        pass


def _fmt_meta(m: tuple[int, int, int]) -> str:
    return f"{m[0]:04o} {m[1]}:{m[2]}"
