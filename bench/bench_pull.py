"""`volmerge pull` vs `podman pull` of the same image from the same registry.

    .venv/bin/python -m bench.bench_pull [--runs 5] [--dir /work] [--kind python]

Starts Debian's docker-registry on 127.0.0.1 (TLS with a CA made here, no
auth; the harness of tests/registry) and pushes into it, with skopeo, the
benchmark image (bench/pull_image.py: ~400 MB in 10 gzip layers, built once
and cached under $VOLMERGE_FIXTURE_CACHE or ~/.cache/volmerge), or a fixture
image with ``--kind``.  Then, each run (medians printed):

- cold: ``volmerge pull`` on an empty store and ``podman pull`` (an isolated
  podman, tests/podman.py, overlay driver, so layers are extracted once as
  ours are) on an empty store, in alternating order;
- warm: ``volmerge pull`` of tag 2 (another image, every layer already in the
  store), the whole command, against the goal of 0.2 s (podman's figure for
  the same, for reference);
- retag: ``volmerge pull`` of tag 1b, the image of tag 1 under another tag
  (its config is in the store too: one manifest request);
- extraction: each layer extracted by the library (``extract_layer``, with
  every hostile-archive check and the diff_id hash) into an empty directory,
  from the gzip blob and from the uncompressed tar, against GNU ``tar -xzf``
  and ``tar -x`` (``--xattrs``, as root: owners and modes kept) of the same.

Goals (issue 17): cold <= 1.0x podman, warm <= 0.2 s, extraction >= 0.9x
``tar -x``.  Not part of the test run; run as root.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _settle() -> None:
    """Write back what the previous step left dirty, so that it is not
    charged to the next one."""
    os.sync()


def _rm(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=True)


def _cache_dir() -> Path:
    env = os.environ.get("VOLMERGE_FIXTURE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "volmerge"


class Bench:
    def __init__(self, base: Path, runs: int) -> None:
        from tests.podman import Podman
        from tests.registry.server import Registry, make_pki

        self.base, self.runs = base, runs
        self.reg = Registry(base / "registry", make_pki(base / "pki"), auth=False)
        self.seed = Podman(base / "seed")
        self.env = dict(os.environ, VOLMERGE_CERTS_D=str(self.reg.certs_d),
                        REGISTRY_AUTH_FILE=str(base / "auth.json"))

    def close(self) -> None:
        self.reg.stop()
        self.seed.close()

    def push(self, src: str, name: str) -> str:
        self.reg.skopeo_copy(self.seed, src, name)
        return self.reg.ref(name)

    def volmerge_pull(self, root: Path, ref: str, src: str | None = None) -> None:
        """``volmerge pull`` as users run it (the ``volmerge`` script: ``python
        -m`` would add runpy's imports, ~5 ms); of the source tree ``src`` (its
        volmerge/ first on the path) instead of this checkout's, for a
        before/after."""
        script = Path(sys.executable).parent / "volmerge"
        if src is None and script.exists():
            cmd, env = [str(script)], self.env
        else:
            cmd, env = [sys.executable, "-m", "volmerge"], self.env
            if src is not None:
                env = dict(env, PYTHONPATH=src)
        # run from src: ``-m`` puts the working directory first on the path,
        # before PYTHONPATH (from this checkout, its volmerge/ would be taken)
        subprocess.run([*cmd, "--root", str(root), "pull", "-q", ref],
                       env=env, check=True, capture_output=True, cwd=src)

    def pulls(self, ref1: str, ref2: str | None, baseline: str | None = None,
              ref3: str | None = None) -> dict[str, list[float]]:
        t: dict[str, list[float]] = {}
        # Every round's stores are removed at the end, not between rounds: ext4
        # without a journal (this disk) will not reuse an inode freed in the
        # last 60 s (300 s while its inode table block is dirty) and reads
        # the inode table to find that out, so the ~40,000 files a round
        # deletes slowed the next cold pull, whichever tool ran it.
        later: list[Callable[[], None]] = []
        try:
            self._rounds(t, later, ref1, ref2, baseline, ref3)
        finally:
            for undo in later:
                undo()
        return t

    def _rounds(self, t: dict[str, list[float]], later: list[Callable[[], None]], ref1: str,
                ref2: str | None, baseline: str | None, ref3: str | None) -> None:
        from tests.podman import Podman

        for i in range(self.runs):
            root, old = self.base / f"store{i}", self.base / f"base{i}"
            pm = Podman(self.base / f"podman{i}", driver="overlay")
            later += [pm.close, lambda root=root: _rm(root), lambda old=old: _rm(old)]
            pull = ("pull", "-q", "--cert-dir", str(self.reg.cert_dir))
            steps = [("volmerge", lambda r: self.volmerge_pull(root, r)),
                     ("podman", lambda r: pm(*pull, r))]
            if baseline is not None:
                steps.append(("baseline", lambda r: self.volmerge_pull(old, r, baseline)))
            k = i % len(steps)   # rotate: no tool always runs after the same one
            for who, fn in steps[k:] + steps[:k]:
                _settle()
                t.setdefault(f"{who} cold", []).append(_timed(lambda: fn(ref1)))
                if ref2 is not None:
                    _settle()
                    t.setdefault(f"{who} warm", []).append(_timed(lambda: fn(ref2)))
                if ref3 is not None:
                    _settle()
                    t.setdefault(f"{who} retag", []).append(_timed(lambda: fn(ref3)))

    def extraction(self, layers: list[tuple[Path, Path, int]]) -> dict[str, float]:
        """Seconds (median over runs) to extract every layer, per tool.
        ``layers``: (gzip blob, uncompressed tar, uncompressed size)."""
        from volmerge.runtime.tarsafe import extract_layer

        out = self.base / "x"
        tools: dict[str, Callable[[Path, Path], object]] = {
            "extract_layer (gzip blob)": lambda b, _t: extract_layer(b, out),
            "tar -xzf (gzip blob)": lambda b, _t: subprocess.run(
                ["tar", "-xzf", str(b), "-C", str(out), "--xattrs"], check=True),
            "extract_layer (tar)": lambda _b, t: extract_layer(t, out),
            "tar -x (tar)": lambda _b, t: subprocess.run(
                ["tar", "-xf", str(t), "-C", str(out), "--xattrs"], check=True),
        }
        runs: dict[str, list[float]] = {k: [] for k in tools}
        names = list(tools)
        for run in range(self.runs):
            for name in names[run % len(names):] + names[: run % len(names)]:
                total = 0.0
                for blob, tar, _size in layers:
                    out.mkdir()
                    _settle()
                    total += _timed(lambda: tools[name](blob, tar))
                    _rm(out)
                runs[name].append(total)
        return {k: statistics.median(v) for k, v in runs.items()}


def _print_pulls(times: dict[str, list[float]]) -> None:
    res = {k: statistics.median(v) for k, v in times.items()}
    for k, v in res.items():
        print(f"  {k:28}{v:8.2f} s   (runs: {', '.join(f'{x:.2f}' for x in times[k])})")
    # the median of the ratios within one round: steadier when the disk's state drifts
    by_round = statistics.median(
        a / b for a, b in zip(times["volmerge cold"], times["podman cold"]))
    print(f"cold pull: volmerge / podman = {res['volmerge cold'] / res['podman cold']:.2f}x"
          f" [{by_round:.2f}x by round]  (goal <= 1.0x)")
    if "baseline cold" in res:
        print(f"cold pull: baseline / podman = {res['baseline cold'] / res['podman cold']:.2f}x")
    if "volmerge warm" in res:
        print(f"warm pull: volmerge {res['volmerge warm']:.2f} s  (goal <= 0.2 s)", flush=True)
    if "volmerge retag" in res:
        print(f"same image, new tag: volmerge {res['volmerge retag']:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default=None,
                    help="a fixture image kind (fixtures/images.py) instead of the 400 MB image")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor of the built image")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--no-extract", action="store_true", help="skip the extraction comparison")
    ap.add_argument("--no-pull", action="store_true", help="only the extraction comparison")
    ap.add_argument("--baseline", default=None, metavar="SRC",
                    help="also time the volmerge of this source tree (e.g. `git archive main`)")
    args = ap.parse_args()

    from bench.pull_image import build

    base = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=args.dir))
    b = Bench(base, args.runs)
    try:
        if args.kind:
            from volmerge.fixtures.images import image_archive

            archive = image_archive(args.kind)
            what = f"fixture {args.kind}: {archive.stat().st_size / 1e6:.0f} MB archive"
            ref1, ref2, ref3 = b.push(f"oci-archive:{archive}", f"bench/{args.kind}:1"), None, None
            layers = []
        else:
            t = time.perf_counter()
            img = build(_cache_dir(), args.scale)
            what = (f"{img.size / 1e6:.0f} MB in {len(img.layers)} layers "
                    f"({img.blob_size / 1e6:.0f} MB gzip; ready in {time.perf_counter() - t:.0f} s)")
            ref1 = b.push(f"oci:{img.layout}:1", "bench/big:1")
            ref2 = b.push(f"oci:{img.layout}:2", "bench/big:2")
            ref3 = b.push(f"oci:{img.layout}:1", "bench/big:1b")
            layers = [(x.blob, x.tar, x.size) for x in img.layers]
        print(f"image: {what}; {args.runs} runs, medians", flush=True)
        if not args.no_pull:
            _print_pulls(b.pulls(ref1, ref2, args.baseline, ref3))
        if layers and not args.no_extract:
            ex = b.extraction(layers)
            mb = sum(s for _b, _t, s in layers) / 1e6
            print(f"extraction of the {len(layers)} layers ({mb:.0f} MB), medians:")
            for k, v in ex.items():
                print(f"  {k:28}{v:8.2f} s {mb / v:7.0f} MB/s")
            gz = ex["tar -xzf (gzip blob)"] / ex["extract_layer (gzip blob)"]
            raw = ex["tar -x (tar)"] / ex["extract_layer (tar)"]
            print(f"extraction throughput vs tar: gzip {gz:.2f}x, uncompressed {raw:.2f}x"
                  "  (goal >= 0.9x)")
    finally:
        b.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
