"""Container start-up: ``volmerge run --rm IMAGE /bin/true`` against bare
``runc run`` on an equivalent bundle and ``podman run --rm`` of the same image.

Run as root: ``.venv/bin/python bench/bench_run.py [-n RUNS] [--network none|bridge]``.
Everything happens in a private mount and network namespace (loopback up) and
temporary directories (podman gets its own storage root); prints the medians
and the ratios.  volmerge is timed as users run it (the ``volmerge`` script)
with the store's warm command server (server.py; any command starts it) and
without it (VOLMERGE_SERVER=0: a fresh interpreter imports everything).
``--network none`` (the default) gives every container an
empty network namespace, as bare ``runc run`` of a ``runc spec`` bundle has;
``--network bridge`` runs volmerge on its default bridge network (a veth, an
address, a hosts file) and podman on its default network.
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
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return dt


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--network", choices=("none", "bridge"), default="none")
    args = ap.parse_args()
    vm_net = ["--network", "none"] if args.network == "none" else []
    pm_net = ["--network", args.network]

    from runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNS | rsys.CLONE_NEWNET)
    rsys.make_private("/")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from fixtures.images import REFS, image_archive

    archive = image_archive("busybox")
    ref = REFS["busybox"]
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        # volmerge: the image in a fresh store
        root = work / "vm"
        env = dict(os.environ, VOLMERGE_ROOT=str(root), VOLMERGE_SERVER="1")
        cold_env = dict(env, VOLMERGE_SERVER="0")
        script = Path(sys.executable).parent / "volmerge"  # what users run
        vm = [str(script)] if script.exists() else [sys.executable, "-m", "volmerge"]
        subprocess.run([*vm, "image", "load", str(archive)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        # runc: the same layer as a plain bundle, spec from `runc spec`
        from runtime.images import ImageStore
        from runtime.store import Store

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

        # the store's warm command server (started by any command; here at once)
        subprocess.run([*vm, "server", "start"], check=True, env=env, stdout=subprocess.DEVNULL)
        results: dict[str, list[float]] = {"volmerge (runc)": [], "volmerge (builtin)": [],
                                           "volmerge (runc, no server)": [], "runc run": []}
        podman_base = None
        if not args.no_podman and shutil.which("podman"):
            results["podman run"] = []
            podman_base = [*PODMAN, "--root", str(work / "pstore"), "--runroot", str(work / "prun"),
                           "--storage-driver", "overlay"]
            subprocess.run([*podman_base, "load", "-i", str(archive)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # one warm-up each, then interleaved runs (fair to caches and noise)
        for i in range(args.runs + 1):
            samples = {
                "volmerge (runc)": lambda: timed([*vm, "run", "--rm", "--runtime", "runc", *vm_net,
                                                  ref, "/bin/true"], env),
                "volmerge (builtin)": lambda: timed([*vm, "run", "--rm", "--runtime", "builtin",
                                                     *vm_net, ref, "/bin/true"], env),
                "volmerge (runc, no server)": lambda: timed(
                    [*vm, "run", "--rm", "--runtime", "runc", *vm_net, ref, "/bin/true"], cold_env),
                "runc run": lambda: timed(["runc", "--root", str(runc_root), "run", "--bundle",
                                           str(bundle), f"bench-{i}"]),
            }
            if podman_base is not None:
                samples["podman run"] = lambda: timed([*podman_base, "run", "--rm", *PODMAN_RUN,
                                                       *pm_net, ref, "/bin/true"])
            for name, fn in samples.items():
                dt = fn()
                if i > 0:
                    results[name].append(dt)
        print(f"container start-up, /bin/true, --network {args.network},"
              f" median of {args.runs} runs:")
        for name, s in results.items():
            print(f"  {name:20s} {median_ms(s):7.1f} ms   (min {min(s)*1000:.1f}, max {max(s)*1000:.1f})")
        vm_ms = median_ms(results["volmerge (runc)"])
        runc_ms = median_ms(results["runc run"])
        print(f"volmerge (runc) / runc run   = {vm_ms / runc_ms:.2f}x  (goal <= 3x)")
        print(f"volmerge (builtin) / runc run = {median_ms(results['volmerge (builtin)']) / runc_ms:.2f}x")
        cold_ms = median_ms(results["volmerge (runc, no server)"])
        print(f"volmerge (runc, no server) / runc run = {cold_ms / runc_ms:.2f}x")
        if "podman run" in results:
            pm = median_ms(results["podman run"])
            print(f"volmerge (runc) / podman run = {vm_ms / pm:.2f}x  (goal < 0.5x)")
            print(f"volmerge (runc, no server) / podman run = {cold_ms / pm:.2f}x")
    finally:
        subprocess.run([*vm, "server", "stop"], env=env, stdout=subprocess.DEVNULL)
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
