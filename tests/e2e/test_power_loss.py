"""Power loss: every commit point follows write -> fsync -> rename -> fsync of
the directory (docs/architecture.md, "Commit points").  The system calls of an
image load, a volume snapshot and an upgrade are recorded with strace and every
rename into the store (outside its tmp/ work area) is checked: what is renamed
was fsynced before (a file, or a directory tree through its own fsyncs or a
syncfs), and the directory it lands in is fsynced after."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .conftest import APP


@dataclass(frozen=True)
class Rename:
    at: int
    src: str
    dst: str


def parse_strace(text: str) -> tuple[list[tuple[int, str]], list[Rename]]:
    """(syncs, renames) of an ``strace -f -y`` log: each sync as (position, the path of
    its descriptor, or ``syncfs:PATH``), each successful rename with absolute paths.
    A file made with O_TMPFILE and linked under a name (atomicfile) is synced under
    that name."""
    events: list[tuple[str, str]] = []
    pending: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(.*)$", line)
        if not m:
            continue
        pid, rest = m.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
        if r and pid in pending:
            rest = pending.pop(pid) + r.group(1)
        events.append((pid, rest))
    linked: dict[tuple[str, str], str] = {}  # (pid, fd) of an O_TMPFILE -> its name
    syncs: list[tuple[int, str]] = []
    renames: list[Rename] = []
    for i, (pid, ev) in enumerate(events):
        m = re.match(r'^linkat\([^,]*, "/proc/self/fd/(\d+)", \d+<([^>]*)>, "([^"]*)"', ev)
        if m and ev.rstrip().endswith("= 0"):
            linked[(pid, m.group(1))] = os.path.join(m.group(2), m.group(3))
            continue
        m = re.match(r"^(fsync|fdatasync|syncfs)\((\d+)<([^>]*)>", ev)
        if m and re.search(r"\)\s*=\s*0$", ev):
            path = linked.get((pid, m.group(2)), m.group(3)) if "#" in m.group(3) else m.group(3)
            syncs.append((i, ("syncfs:" if m.group(1) == "syncfs" else "") + path))
            continue
        m = re.match(r"^(rename|renameat|renameat2)\((.*)\)\s*=\s*0", ev)
        if not m:
            continue
        if m.group(1) == "rename":
            src, dst = re.findall(r'"([^"]*)"', m.group(2))[:2]
        else:
            parts = re.findall(r'(AT_FDCWD|\d+<[^>]*>), "([^"]*)"', m.group(2))
            (d1, src), (d2, dst) = parts[:2]
            src = src if src.startswith("/") or d1 == "AT_FDCWD" else os.path.join(d1.split("<", 1)[1][:-1], src)
            dst = dst if dst.startswith("/") or d2 == "AT_FDCWD" else os.path.join(d2.split("<", 1)[1][:-1], dst)
        renames.append(Rename(i, src, dst))
    return syncs, renames


def broken_commits(text: str, root: Path) -> list[str]:
    """The renames into ``root`` (not into its tmp/) that break the rule.  A file
    synced under one name and renamed inside tmp/ is still synced under the next."""
    syncs, renames = parse_strace(text)
    store, tmp = str(root) + "/", str(root / "tmp") + "/"
    events = sorted([(at, "sync", path) for at, path in syncs]
                    + [(r.at, "rename", r) for r in renames], key=lambda e: e[0])
    synced: set[str] = set()
    everything_synced = False
    bad = []
    for _, kind, what in events:
        if kind == "sync":
            if what.startswith("syncfs:"):
                everything_synced = True
            synced.add(what)
            continue
        r = what
        before = everything_synced or r.src in synced or any(
            p.startswith(r.src + "/") for p in synced)
        if before:
            synced.add(r.dst)
        if not r.dst.startswith(store) or r.dst.startswith(tmp):
            continue
        after = any(j > r.at and p == os.path.dirname(r.dst) for j, p in syncs)
        if not (before and after):
            bad.append(f"{r.src} -> {r.dst}: "
                       + ", ".join(w for w, ok in (("not synced before", before),
                                                   ("directory not synced after", after)) if not ok))
    return bad


def traced(vm, tmp_path: Path, *args: str) -> str:  # type: ignore[no-untyped-def]
    """The command's own system calls (its threads too); strace lets go of a
    child when it executes a program (runc, a container's supervisor), which
    would otherwise keep strace waiting as long as the container runs."""
    log = tmp_path / "strace.log"
    env = dict(os.environ, VOLMERGE_ROOT=str(vm.root))
    p = subprocess.run(["strace", "-f", "--seccomp-bpf", "--detach-on=execve", "-y", "-qq", "-o", str(log),
                        "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,linkat",
                        sys.executable, "-m", "volmerge", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    log.unlink()
    return text


def test_parse_strace_reads_renames_and_syncs() -> None:
    text = "\n".join([
        '10 fsync(3</s/tmp/x>) = 0',
        '10 renameat2(AT_FDCWD, "/s/tmp/x", AT_FDCWD, "/s/images/x", RENAME_NOREPLACE) = 0',
        '11 renameat(4</s/layers>, "new", 4</s/layers>, "abc" <unfinished ...>',
        '11 <... renameat resumed>) = 0',
        '10 fsync(5</s/images>) = 0',
        '12 linkat(AT_FDCWD</>, "/proc/self/fd/4", 3</s/v>, "m.json.lock", AT_SYMLINK_FOLLOW) = 0',
        '12 fsync(4</s/v/#2236449>(deleted)) = 0',
        '12 renameat(3</s/v>, "m.json.lock", 3</s/v>, "m.json") = 0',
        '12 fsync(3</s/v>) = 0',
    ])
    syncs, renames = parse_strace(text)
    assert [r.dst for r in renames] == ["/s/images/x", "/s/layers/abc", "/s/v/m.json"]
    assert broken_commits(text, Path("/s")) == [
        "/s/layers/new -> /s/layers/abc: not synced before, directory not synced after"]


def test_image_load_snapshot_and_upgrade_commit_by_the_rule(vm, tmp_path, fixture_image) -> None:  # type: ignore[no-untyped-def]
    bad = broken_commits(traced(vm, tmp_path, "image", "load", str(fixture_image("busybox"))),
                         vm.root)
    vm("run", "-d", "--name", "app", "--network", "none", "-v", "app-data:/data", APP[1],
       check=True)
    vm("exec", "app", "sh", "-c", "echo mine > /data/mine.txt", check=True)
    bad += broken_commits(traced(vm, tmp_path, "volume", "snapshot", "--pause", "app-data"), vm.root)
    bad += broken_commits(traced(vm, tmp_path, "upgrade", "app", "--to", APP[2],
                                 "--health-timeout", "0.3", "--stop-timeout", "2"), vm.root)
    assert bad == [], "\n".join(bad)
