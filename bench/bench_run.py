"""Container start-up: ``volmerge run --rm IMAGE /bin/true`` against bare
``runc run`` on an equivalent bundle and ``podman run --rm`` of the same image,
side by side in one run.

Run as root: ``.venv/bin/python bench/bench_run.py [-n RUNS] [--network none|bridge|both]``.
Everything happens in a private mount and network namespace (loopback up) and
temporary directories (podman gets its own --root and --runroot, removed
afterwards); prints the medians, the ratios against the goals (volmerge
<= 0.5 x podman and <= 3 x runc) and, for a goal not met, the modules with the
largest import time.  volmerge is timed cold, as users run it: the
``volmerge`` script, a fresh interpreter every time, no helper process.
``--network none`` gives every container an empty network namespace, as bare
``runc run`` of a ``runc spec`` bundle has; ``bridge`` (volmerge's and
podman's default) runs volmerge on its default bridge network (a veth, an
address, a hosts file) and podman on its default network.  runc has no
network of its own, so it is the same in both, and the goal against it is
checked like for like, on ``--network none``.
"""

from __future__ import annotations

import argparse
import json
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

PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc", "--events-backend", "file"]
PODMAN_RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return dt


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


GOAL_PODMAN, GOAL_RUNC = 0.5, 3.0


def per_round(a: list[float], b: list[float]) -> float:
    """The median of a[i] / b[i]: both were measured in the same round."""
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--network", choices=("none", "bridge", "both"), default="both")
    ap.add_argument("--top", type=int, default=8,
                    help="import-time entries shown for a goal not met")
    args = ap.parse_args()
    nets = ("none", "bridge") if args.network == "both" else (args.network,)

    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNS | rsys.CLONE_NEWNET)
    rsys.make_private("/")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from bench_startup import compile_bytecode

    from volmerge.fixtures.images import REFS, image_archive

    compile_bytecode()
    archive = image_archive("busybox")
    ref = REFS["busybox"]
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        # volmerge: the image in a fresh store
        root = work / "vm"
        env = dict(os.environ, VOLMERGE_ROOT=str(root))
        script = Path(sys.executable).parent / "volmerge"  # what users run
        vm = [str(script)] if script.exists() else [sys.executable, "-m", "volmerge"]
        subprocess.run([*vm, "image", "load", str(archive)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        # runc: the same layer as a plain bundle, spec from `runc spec`
        from volmerge.runtime.images import ImageStore
        from volmerge.runtime.store import Store

        st = Store(root)
        lower = ImageStore(st).get(ref).lower_dirs()
        st.close()
        bundle = work / "bundle"
        (bundle / "rootfs").mkdir(parents=True)
        for low in reversed(lower):
            subprocess.run(["cp", "-a", f"{low}/.", str(bundle / "rootfs")], check=True)
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        spec["root"]["readonly"] = False
        (bundle / "config.json").write_text(json.dumps(spec))
        runc_root = work / "runc"

        podman_base = None
        if not args.no_podman and shutil.which("podman"):
            podman_base = [*PODMAN, "--root", str(work / "pstore"), "--runroot", str(work / "prun"),
                           "--storage-driver", "overlay"]
            subprocess.run([*podman_base, "load", "-i", str(archive)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def vm_run(net: str, runtime: str) -> list[str]:
            return [*vm, "run", "--rm", "--runtime", runtime,
                    *(["--network", "none"] if net == "none" else []), ref, "/bin/true"]

        cases: dict[str, object] = {}
        for net in nets:
            cases[f"volmerge (runc), {net}"] = lambda net=net: timed(vm_run(net, "runc"), env)
            cases[f"volmerge (builtin), {net}"] = lambda net=net: timed(vm_run(net, "builtin"), env)
            if podman_base is not None:
                cases[f"podman run, {net}"] = lambda net=net: timed(
                    [*podman_base, "run", "--rm", *PODMAN_RUN, "--network", net, ref, "/bin/true"])
        round_no = [0]
        cases["runc run"] = lambda: timed(["runc", "--root", str(runc_root), "run", "--bundle",
                                           str(bundle), f"bench-{round_no[0]}"])
        results: dict[str, list[float]] = {name: [] for name in cases}
        # one warm-up each, then interleaved runs (fair to caches and noise)
        for i in range(args.runs + 1):
            round_no[0] = i
            for name, fn in cases.items():
                dt = fn()  # type: ignore[operator]
                if i > 0:
                    results[name].append(dt)
        print(f"container start-up, /bin/true, volmerge cold (a fresh process each run),"
              f" median of {args.runs} interleaved runs:")
        for name, s in results.items():
            print(f"  {name:28s} {median_ms(s):7.1f} ms"
                  f"   (min {min(s) * 1000:.1f}, max {max(s) * 1000:.1f})")
        runc_ms = median_ms(results["runc run"])
        missed = []
        print("ratios of the medians (in brackets: the median of the ratios within one round,"
              " steadier when the machine's load drifts):")
        for net in nets:
            vm_s = results[f"volmerge (runc), {net}"]
            vm_ms = median_ms(vm_s)
            # bare runc has no network of its own: its goal is checked like for like, on
            # --network none; on a bridge the ratio is printed for information
            ok = vm_ms / runc_ms <= GOAL_RUNC or net != "none"
            verdict = ("met" if ok else "not met") if net == "none" else "runc has no network"
            line = f"--network {net}: volmerge / runc = {vm_ms / runc_ms:.2f}x" \
                   f" [{per_round(vm_s, results['runc run']):.2f}x] (goal <= {GOAL_RUNC:g}x: " \
                   f"{verdict})"
            if podman_base is not None:
                pm_s = results[f"podman run, {net}"]
                pm_ms = median_ms(pm_s)
                ok_pm = vm_ms / pm_ms <= GOAL_PODMAN
                ok = ok and ok_pm
                line += f", volmerge / podman = {vm_ms / pm_ms:.2f}x" \
                        f" [{per_round(vm_s, pm_s):.2f}x] (goal <= {GOAL_PODMAN:g}x:" \
                        f" {'met' if ok_pm else 'not met'})"
            print(line)
            if not ok:
                missed.append(net)
        for net in missed:
            # where a missed goal's time goes: what the cold process imports
            from bench_startup import importtime

            wall, imp = importtime(vm_run(net, "runc")[1:], env)
            print(f"--network {net}, python -X importtime: imports {imp.total_ms:.1f} ms of a"
                  f" {wall * 1000:.1f} ms run (under importtime); by package: "
                  + ", ".join(f"{m} {ms:.1f}" for m, ms in imp.packages(args.top))
                  + "; largest self times:")
            for mod, ms in imp.top(args.top):
                print(f"    {ms:6.2f} ms  {mod}")
    finally:
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
