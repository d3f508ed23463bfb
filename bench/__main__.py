"""``make bench`` (``python -m bench [NAME...]``): every benchmark of bench/, one
after another with its defaults, or the ones named (``run``, ``pull``...).
Each one prints its own figures and ratios against its peer; the exit code
is the number of benchmarks that failed to run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    found = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    unknown = [n for n in names if n not in found]
    if unknown:
        print(f"bench: no benchmark {', '.join(unknown)} (there are: {', '.join(found)})",
              file=sys.stderr)
        return 2
    failed = 0
    for name in names or found:
        print(f"== bench/bench_{name}.py", flush=True)
        code = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py")]).returncode
        if code:
            print(f"== bench/bench_{name}.py exited {code}", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
