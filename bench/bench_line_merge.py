"""Benchmark: the line merge of one large file against ``git merge-file -p``.

    .venv/bin/python bench/bench_line_merge.py [--lines 100000] [--runs 5]

Two files, each merged by the text strategy (``merge_text``, in process, the
first call's libgit2 loading excluded) and by ``git merge-file -p`` (a
process per run, as an operator would run it), median of --runs:

* an INI file of LINES lines (sections of 10 keys); ours edits a value every
  1,000 lines near the top, theirs every 1,000 lines near the bottom and adds
  a section, so the merge is clean;
* LINES identical lines (the worst case for a quadratic matcher), ours adds
  one at the top, theirs one at the end.

Prints the medians and the ratio volmerge / git (goal: at most 5x) and checks
that both give the same bytes.  The INI file is also merged by the structured
strategy (as ``app.conf``: format found by content, git's line merge clean).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))


def ini_triple(n: int) -> tuple[bytes, bytes, bytes]:
    base = []
    for i in range(n // 11):
        base.append(f"[section{i}]\n")
        base.extend(f"key{k} = value {i}.{k}\n" for k in range(10))
    ours, theirs = list(base), list(base)
    for j in range(5, len(base) // 2, 1000):
        if "=" in ours[j]:
            ours[j] = ours[j].replace("value", "operator")
    for j in range(len(base) // 2 + 5, len(base), 1000):
        if "=" in theirs[j]:
            theirs[j] = theirs[j].replace("value", "release")
    theirs += ["\n", "[added]\n", "new = 1\n"]
    return tuple("".join(x).encode() for x in (base, ours, theirs))  # type: ignore[return-value]


def same_triple(n: int) -> tuple[bytes, bytes, bytes]:
    base = b"same\n" * n
    return base, b"top\n" + base, base + b"end\n"


def median_time(fn, runs: int) -> tuple[float, bytes]:  # type: ignore[no-untyped-def]
    times, out = [], b""
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from volmerge.strategies.base import MergeOptions
    from volmerge.strategies.structured import StructuredStrategy
    from volmerge.strategies.text import merge_text

    merge_text("warm", b"a\n", b"b\n", b"a\nc\n", MergeOptions())  # loads libgit2 once
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-line-merge-") as d:
        for label, (base, ours, theirs) in (("INI", ini_triple(a.lines)),
                                            ("identical lines", same_triple(a.lines))):
            paths = []
            for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
                p = Path(d) / name
                p.write_bytes(data)
                paths.append(str(p))
            tv, ours_out = median_time(lambda: merge_text("f", base, ours, theirs,  # noqa: B023
                                                          MergeOptions()).content or b"", a.runs)
            tg, git_out = median_time(lambda: subprocess.run(  # noqa: B023
                ["git", "merge-file", "-p", *paths], capture_output=True, check=True).stdout, a.runs)
            same = "same bytes" if ours_out == git_out else "DIFFERENT BYTES"
            ratio = tv / tg
            worst = max(worst, ratio)
            print(f"{label}, {a.lines} lines: volmerge {tv * 1000:.1f} ms, "
                  f"git merge-file -p {tg * 1000:.1f} ms, ratio {ratio:.2f}x ({same})")
            if label == "INI":
                ts, st_out = median_time(lambda: StructuredStrategy().merge(  # noqa: B023
                    "app.conf", base, ours, theirs, MergeOptions()).content or b"", a.runs)
                print(f"INI by the structured strategy: {ts * 1000:.1f} ms, ratio {ts / tg:.2f}x "
                      f"({'same bytes' if st_out == git_out else 'DIFFERENT BYTES'})")
    print(f"worst ratio {worst:.2f}x (goal <= 5x)")


if __name__ == "__main__":
    main()
