"""Benchmark: three-way merge of a 10,000-file tree against git and cp -a.

    .venv/bin/python bench/bench_merge.py [--files 10000] [--runs 5] [--loop-runs 3]

The tree: FILES text files of ~2 KB in directories of 100; ours changes 5%
of the files near their top, theirs 5% near their bottom, and 1% of the
files are changed by both (at different lines, so they merge cleanly);
theirs also adds and deletes a few files.  Median of --runs for:

* ``cp -a OURS X``: the floor for writing a full result on this disk;
* ``volmerge merge BASE OURS THEIRS -o X`` (the whole command, directory to
  directory);
* ``merge_trees(..., mode="upper")`` into an empty overlay upper directory
  (what an upgrade does: only changed paths are written);
* git end to end: import the three trees as commits, ``git merge-tree
  --write-tree``, check the merged tree out into a directory (each phase
  timed too);
* a loop of ``git merge-file`` over every file (median of --loop-runs).

Everything lives in one scratch directory on the main disk, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
VOLMERGE = [sys.executable, "-m", "volmerge"]


def content(i: int, top: str = "", bottom: str = "") -> bytes:
    lines = [f"# file {i}", top or "top = 1"]
    lines += [f"line {j} of file {i}: " + "x" * 20 for j in range(46)]
    lines += [bottom or "bottom = 1"]
    return ("\n".join(lines) + "\n").encode()


def build(root: Path, n: int) -> tuple[Path, Path, Path]:
    base, ours, theirs = root / "base", root / "ours", root / "theirs"
    for i in range(n):
        rel = Path(f"d{i // 100:03d}") / f"f{i:05d}.txt"
        ochg = i % 20 == 0  # 5%
        tchg = i % 20 == 1 or i % 100 == 0  # 5%, of which 1% overlap ours
        for side, top, bottom in ((base, "", ""), (ours, "top = ours" if ochg else "", ""),
                                  (theirs, "", "bottom = theirs" if tchg else "")):
            p = side / rel
            if i % 100 == 0:
                p.parent.mkdir(parents=True, exist_ok=True)
            if side is theirs and i % 500 == 7:
                continue  # deleted by theirs
            p.write_bytes(content(i, top, bottom))
    for j in range(n // 500):
        (theirs / f"d{j:03d}" / f"new{j}.txt").write_bytes(content(-j))
    os.sync()
    return base, ours, theirs


def run(cmd: list[str], **kw) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def timed(fn, runs: int, cleanup) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        cleanup()
        os.sync()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    cleanup()
    return out


def git_end_to_end(root: Path, base: Path, ours: Path, theirs: Path, phases: dict[str, list[float]]) -> None:
    repo = root / "repo.git"
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b", GIT_DIR=str(repo))
    t0 = time.perf_counter()
    run(["git", "init", "-q", "--bare", str(repo)], env=env)

    def commit(tree_dir: Path, branch: str, parent: str | None) -> str:
        e = dict(env, GIT_WORK_TREE=str(tree_dir), GIT_INDEX_FILE=str(root / f"index-{branch}"))
        run(["git", "add", "-A", "."], env=e, cwd=tree_dir)
        tree = subprocess.run(["git", "write-tree"], env=e, check=True, capture_output=True, text=True).stdout.strip()
        args = ["git", "commit-tree", tree, "-m", branch] + (["-p", parent] if parent else [])
        c = subprocess.run(args, env=e, check=True, capture_output=True, text=True).stdout.strip()
        run(["git", "update-ref", f"refs/heads/{branch}", c], env=e)
        return c

    b = commit(base, "base", None)
    commit(ours, "ours", b)
    commit(theirs, "theirs", b)
    t1 = time.perf_counter()
    tree = subprocess.run(["git", "merge-tree", "--write-tree", "ours", "theirs"], env=env, check=True,
                          capture_output=True, text=True).stdout.split()[0]
    t2 = time.perf_counter()
    out = root / "git-out"
    out.mkdir()
    e = dict(env, GIT_WORK_TREE=str(out), GIT_INDEX_FILE=str(root / "index-out"))
    run(["git", "read-tree", tree], env=e)
    run(["git", "checkout-index", "-a"], env=e, cwd=out)
    t3 = time.perf_counter()
    phases["import"].append(t1 - t0)
    phases["merge-tree"].append(t2 - t1)
    phases["checkout"].append(t3 - t2)


def merge_file_loop(base: Path, ours: Path, theirs: Path, out: Path) -> None:
    shutil.copytree(ours, out, symlinks=True)  # git merge-file merges into the ours file in place
    for dirpath, _dirs, files in os.walk(out):
        rel = Path(dirpath).relative_to(out)
        for f in files:
            b, t = base / rel / f, theirs / rel / f
            if b.exists() and t.exists():
                subprocess.run(["git", "merge-file", str(Path(dirpath) / f), str(b), str(t)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--loop-runs", type=int, default=3)
    args = ap.parse_args()
    from volmerge.strategies.tree import merge_trees

    root = Path(tempfile.mkdtemp(prefix="volmerge-bench-merge-", dir="/var/tmp"))
    try:
        print(f"building 3 x {args.files} files in {root} ...", flush=True)
        base, ours, theirs = build(root, args.files)
        x = root / "x"

        def clean() -> None:
            for p in (x, root / "repo.git", root / "git-out"):
                shutil.rmtree(p, ignore_errors=True)
            for p in root.glob("index-*"):
                p.unlink()

        res: dict[str, list[float]] = {}
        res["cp -a OURS X"] = timed(lambda: run(["cp", "-a", str(ours), str(x)]), args.runs, clean)
        res["volmerge merge (dir->dir, CLI)"] = timed(
            lambda: run(VOLMERGE + ["merge", str(base), str(ours), str(theirs), "-o", str(x)]), args.runs, clean)
        written = []

        def upper() -> None:
            x.mkdir()
            written.append(merge_trees(base, ours, theirs, x, mode="upper").summary["written"])

        res["merge_trees mode=upper (library)"] = timed(upper, args.runs, clean)
        phases: dict[str, list[float]] = {"import": [], "merge-tree": [], "checkout": []}
        res["git end to end"] = timed(lambda: git_end_to_end(root, base, ours, theirs, phases), args.runs, clean)
        res["git merge-file loop"] = timed(lambda: merge_file_loop(base, ours, theirs, x), args.loop_runs, clean)

        floor = statistics.median(res["cp -a OURS X"])
        print(f"\n{args.files} files of ~2 KB; ours changed 5%, theirs 5%, 1% both; median of runs\n")
        print(f"{'what':<36} {'median s':>9} {'vs cp -a':>9}   runs")
        for k, v in res.items():
            m = statistics.median(v)
            print(f"{k:<36} {m:9.3f} {m / floor:8.2f}x   {' '.join(f'{t:.2f}' for t in v)}")
        for k, v in phases.items():
            print(f"{'  git ' + k:<36} {statistics.median(v):9.3f}")
        vm = statistics.median(res["volmerge merge (dir->dir, CLI)"])
        print(f"\nvolmerge dir->dir / cp -a floor: {vm / floor:.2f}x (goal <= 1.5x)")
        print(f"git end to end / volmerge dir->dir: {statistics.median(res['git end to end']) / vm:.2f}x")
        print(f"git merge-file loop / volmerge dir->dir: {statistics.median(res['git merge-file loop']) / vm:.2f}x")
        print(f"mode=upper: {statistics.median(res['merge_trees mode=upper (library)']):.3f} s, "
              f"{written[0]} paths written (goal < 1 s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
