"""Benchmark: volume snapshot / rollback against copying the data.

    .venv/bin/python bench/bench_volume.py [--sizes 1g,10g] [--runs 5] [--peer-runs 5]

For each size a volume is filled with N files (1 GB in 10,000 files of
100 KiB written with real bytes; 10 GB in 100,000 files of 100 KiB made with
fallocate, because writing 10 GB takes minutes on this disk — the files are
real, allocated, and read as zeros).  Then, median of ``--runs``:

* library ``VolumeManager.snapshot`` and ``rollback`` (to the latest snapshot)
  with the volume unmounted, and with it mounted (the host overlay is
  unmounted and remounted: what a container's volume costs);
* the whole ``volmerge volume snapshot`` / ``rollback`` commands, on this
  volume and on an empty one;
* peers on the same data: ``cp -a``, ``tar -cf``, ``podman volume export``.

Runs in its own mount namespace; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

SIZES = {"1g": (10_000, 100 * 1024, "write"), "10g": (100_000, 100 * 1024, "fallocate"),
         "10m": (100, 100 * 1024, "write")}
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc"]


def fill(d: Path, n: int, size: int, how: str) -> None:
    block = os.urandom(size)
    for i in range(n):
        sub = d / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        fd = os.open(sub / f"f{i:06d}", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if how == "write":
                os.write(fd, block[i % 7:] + block[: i % 7])
            else:
                os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    os.sync()


def timed(fn, runs: int, setup=None, cleanup=None) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if cleanup:
            cleanup()
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(s: float) -> str:
    return f"{s * 1000:.2f} ms" if s < 1 else f"{s:.2f} s"


def run(cmd: list[str], **kw) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def bench_size(label: str, base: Path, runs: int, peer_runs: int) -> dict[str, float]:
    from volmerge.runtime.store import Store
    from volmerge.volumes import ContainerHooks, VolumeManager

    n, size, how = SIZES[label]
    root = base / f"root-{label}"
    store = Store(root)
    vm = VolumeManager(store, hooks=ContainerHooks(lambda c: None, lambda c: None, lambda c: None))
    vm.create("vol")
    vm.create("empty")
    data = vm.live_upper("vol")
    t = time.perf_counter()
    fill(data, n, size, how)
    print(f"\n== {label}: {n} files of {size // 1024} KiB ({how}), made in {time.perf_counter() - t:.1f} s")
    r: dict[str, float] = {}
    t = time.perf_counter()
    vm.snapshot("vol", tag="data")
    r["first snapshot (freezes the data layer)"] = time.perf_counter() - t
    counter = iter(range(10**6))

    def small_write() -> None:
        (vm.live_upper("vol") / f"w{next(counter)}").write_text("x")

    r["library snapshot"] = med(timed(lambda: vm.snapshot("vol"), runs, setup=small_write))
    r["library rollback"] = med(timed(lambda: vm.rollback("vol"), runs, setup=small_write))
    vm.attach("vol", "bench", None)
    try:
        r["library snapshot, mounted"] = med(timed(
            lambda: vm.snapshot("vol", force=True), runs,
            setup=lambda: (vm.pool.merged("vol") / f"m{next(counter)}").write_text("x")))
    finally:
        vm.detach("vol", "bench")
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    cli = [sys.executable, "-m", "volmerge", "volume"]
    for vol in ("vol", "empty"):
        r[f"CLI volume snapshot ({vol})"] = med(timed(lambda: run(cli + ["snapshot", vol], env=env), runs))
        r[f"CLI volume rollback ({vol})"] = med(timed(lambda: run(cli + ["rollback", vol], env=env), runs))
    store.close()

    with vm.view("vol") as src:
        dest = base / "copy"
        r["cp -a"] = med(timed(lambda: run(["cp", "-a", f"{src}/.", str(dest)]), peer_runs,
                               setup=lambda: dest.mkdir(), cleanup=lambda: shutil.rmtree(dest)))
        tarf = base / "copy.tar"
        r["tar -c"] = med(timed(lambda: run(["tar", "-C", str(src), "-cf", str(tarf), "."]),
                                peer_runs, cleanup=lambda: tarf.unlink()))
        pv = f"volmerge-bench-{os.getpid()}"
        if shutil.which("podman"):
            run(PODMAN + ["volume", "create", pv])
            try:
                mp = subprocess.run(PODMAN + ["volume", "inspect", pv, "--format", "{{.Mountpoint}}"],
                                    check=True, capture_output=True, text=True).stdout.strip()
                run(["cp", "-a", f"{src}/.", mp])
                out = base / "podman.tar"
                r["podman volume export"] = med(timed(
                    lambda: run(PODMAN + ["volume", "export", pv, "-o", str(out)]), peer_runs,
                    cleanup=lambda: out.unlink()))
            finally:
                run(PODMAN + ["volume", "rm", "-f", pv])
    for k, v in r.items():
        print(f"  {k:45s} {fmt(v)}")
    for peer in ("cp -a", "tar -c", "podman volume export"):
        if peer in r:
            print(f"  {peer} / library snapshot: {r[peer] / r['library snapshot']:,.0f}x   "
                  f"/ library rollback: {r[peer] / r['library rollback']:,.0f}x   "
                  f"/ CLI snapshot: {r[peer] / r['CLI volume snapshot (vol)']:,.0f}x")
    print(f"  CLI snapshot {label} vs empty: "
          f"{r['CLI volume snapshot (vol)'] / r['CLI volume snapshot (empty)']:.2f}x, "
          f"rollback: {r['CLI volume rollback (vol)'] / r['CLI volume rollback (empty)']:.2f}x")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1g,10g")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peer-runs", type=int, default=5)
    ap.add_argument("--dir", default="/var/tmp/volmerge-bench")
    a = ap.parse_args()
    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNS)
    rsys.make_private("/")
    base = Path(a.dir)
    if base.exists():
        rsys.umount_tree(base)
        shutil.rmtree(base)
    base.mkdir(parents=True)
    print(f"kernel {os.uname().release}, {os.cpu_count()} cores; median of {a.runs} "
          f"(peers: median of {a.peer_runs})")
    try:
        for label in a.sizes.split(","):
            bench_size(label, base, a.runs, a.peer_runs)
    finally:
        rsys.umount_tree(base)
        from volmerge.runtime import fsutil

        fsutil.rmtree(base)


if __name__ == "__main__":
    main()
