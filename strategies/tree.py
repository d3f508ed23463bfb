"""Three-way merge of directory trees: the entry point (``merge_trees``).

Checks the inputs and the output, picks the writer (full tree, overlay upper
layer, dry run) and runs the walk (strategies.walk, which decides every path
by the table in docs/merge.md and hands each decision to the writer,
strategies.writers.TreeWriter).  Results land in a
sibling of ``out`` marked incomplete (runtime.incomplete: swept by the next
merge into the same place, or by the store, when a crash leaves it) that is
renamed into place at the end: all or nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from volmerge.runtime import incomplete, overlayfmt
from volmerge.runtime.atomicfile import fsync_dir, syncfs

from .errors import BadInput
from .nodes import MAX_DEPTH, DirHandle, Node, root_node
from .policy import ON_CONFLICT, Policy
from .treereport import MergeConflict, TreeReport
from .walk import Walk, drive, merge_value
from .writers import DryWriter, FullWriter, TreeWriter, UpperWriter, WriterFactory


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
        syncfs(tmp)  # on disk before it is in place (write, sync, rename, sync dir)
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
    walk = Walk(policy, on_conflict, diff3, writer, report)
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


def _merge_dirs(walk: Walk, paths: dict[str, Path], writer: TreeWriter) -> None:
    handles = {s: DirHandle.open_root(s, str(p)) for s, p in paths.items()}
    try:
        b, o, t = handles.get("base"), handles["ours"], handles["theirs"]
        ro, rt = os.fstat(o.fd), os.fstat(t.fd)
        rb = os.fstat(b.fd) if b else None
        meta, _c = merge_value(
            (stat.S_IMODE(rb.st_mode), rb.st_uid, rb.st_gid) if rb else None,
            (stat.S_IMODE(ro.st_mode), ro.st_uid, ro.st_gid),
            (stat.S_IMODE(rt.st_mode), rt.st_uid, rt.st_gid), rb is not None)
        drive(walk.dir("", b, o, t))
        if walk.w.active:
            writer.set_root_meta(meta, None)
            rootfd = getattr(writer, "rootfd", -1)
            if rootfd >= 0:
                os.utime(rootfd, ns=(ro.st_atime_ns, ro.st_mtime_ns))
    finally:
        for h in handles.values():
            h.close()


def _merge_single(walk: Walk, paths: dict[str, Path], name: str) -> None:
    nodes: dict[str, Node] = {}
    fds: list[int] = []
    try:
        for s, p in paths.items():
            n, fd = root_node(s, str(p))
            fds.append(fd)
            n.side, n.rel = s, p.name
            nodes[s] = n
        b, o, t = nodes.get("base"), nodes["ours"], nodes["theirs"]
        for n in nodes.values():
            n.name = os.path.basename(str(paths[n.side]))
            n.rel = name
        drive(walk.entry(name, name, b, o, t, None, None, None, {name}))
    finally:
        for fd in fds:
            os.close(fd)


def _place_single(tmp: str, outp: Path) -> None:
    for entry in sorted(os.listdir(tmp)):
        target = outp if entry == outp.name else outp.with_name(outp.name + entry[len(outp.name):])
        if os.path.lexists(target):
            raise BadInput(f"output {target} already exists")
        os.rename(os.path.join(tmp, entry), target)

