"""Benchmark: how long networking a container takes.

    .venv/bin/python bench/bench_network.py [--cycles 50] [--podman-runs 7]

Runs entirely inside a network namespace and a private mount namespace of
its own (tmpfs on /run), so the host's network is never touched.

- volmerge: NetworkManager.connect() / disconnect() (pyroute2 netlink in one
  process; nft only when ports are published), median of --cycles.
- peer 1, iproute2 shell-outs: the same steps as `ip netns add`, `ip link add
  veth ... netns`, `ip -n ... addr/link/route` (+ `nft` for a port).
- peer 2, podman+netavark: `podman run --network bridge` minus `podman run
  --network none` with a busybox fixture image in a throw-away storage; the
  difference is what podman spends on networking.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volmerge.runtime import sys as rsys  # noqa: E402


def isolate() -> None:
    rsys.unshare(rsys.CLONE_NEWNS | rsys.CLONE_NEWNET)
    rsys.make_private("/")
    rsys.mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.2f} ms"


def bench_volmerge(work: Path, cycles: int) -> dict[str, list[float]]:
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store

    nm = NetworkManager(Store(work / "root"))
    nm.ensure_default()
    nm.connect("warm", None, "warm")
    nm.disconnect("warm", release=True)
    out: dict[str, list[float]] = {"connect": [], "connect -p": [], "disconnect": [],
                                   "disconnect -p": [], "connect none": []}
    for i in range(cycles):
        t = time.perf_counter()
        nm.connect(f"c{i}", None, f"h{i}")
        out["connect"].append(time.perf_counter() - t)
        t = time.perf_counter()
        nm.disconnect(f"c{i}", release=True)
        out["disconnect"].append(time.perf_counter() - t)
        t = time.perf_counter()
        nm.connect(f"p{i}", None, f"p{i}", ports=["8080:80"])
        out["connect -p"].append(time.perf_counter() - t)
        t = time.perf_counter()
        nm.disconnect(f"p{i}", release=True)
        out["disconnect -p"].append(time.perf_counter() - t)
        t = time.perf_counter()
        nm.connect(f"n{i}", "none", f"n{i}")
        out["connect none"].append(time.perf_counter() - t)
        nm.disconnect(f"n{i}", release=True)
    for n in nm.list():
        nm.remove(n.name)
    nm.store.close()
    return out


def bench_iproute2(cycles: int) -> dict[str, list[float]]:
    def sh(*cmds: list[str], stdin: str | None = None) -> None:
        for c in cmds:
            subprocess.run(c, check=True, input=stdin, text=True, capture_output=True)

    sh(["ip", "link", "add", "pbr0", "type", "bridge"],
       ["ip", "addr", "add", "10.77.0.1/16", "dev", "pbr0"],
       ["ip", "link", "set", "pbr0", "up"])
    out: dict[str, list[float]] = {"connect": [], "connect -p": [], "disconnect": []}
    for i in range(cycles):
        for key in ("connect", "connect -p"):
            t = time.perf_counter()
            ns = f"b{i}"
            sh(["ip", "netns", "add", ns],
               ["ip", "link", "add", f"vp{i}", "type", "veth", "peer", "name", "eth0", "netns", ns],
               ["ip", "link", "set", f"vp{i}", "master", "pbr0", "up"],
               ["ip", "-n", ns, "link", "set", "lo", "up"],
               ["ip", "-n", ns, "addr", "add", "10.77.0.2/16", "dev", "eth0"],
               ["ip", "-n", ns, "link", "set", "eth0", "up"],
               ["ip", "-n", ns, "route", "add", "default", "via", "10.77.0.1"])
            if key == "connect -p":
                sh(["nft", "-f", "-"], stdin=(
                    "table ip peer\ndelete table ip peer\ntable ip peer {\n"
                    " chain pre {\n  type nat hook prerouting priority dstnat; policy accept;\n"
                    "  fib daddr type local tcp dport 8080 dnat to 10.77.0.2:80\n }\n}\n"))
            out[key].append(time.perf_counter() - t)
            t = time.perf_counter()
            sh(["ip", "link", "del", f"vp{i}"], ["ip", "netns", "del", ns])
            if key == "connect":
                out["disconnect"].append(time.perf_counter() - t)
    sh(["ip", "link", "del", "pbr0"], ["nft", "delete", "table", "ip", "peer"])
    return out


def bench_podman(work: Path, runs: int) -> dict[str, list[float]] | str:
    if shutil.which("podman") is None:
        return "podman not installed"
    try:
        from volmerge.fixtures.images import image_archive

        archive = image_archive("busybox")
    except Exception as exc:  # pragma: no cover - depends on the host
        return f"no busybox fixture image: {exc}"
    # a network config dir of its own: `system reset` below removes every
    # network in it (by default the host's, /etc/cni/net.d)
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "run"),
            "--network-config-dir", str(work / "networks"),
            "--cgroup-manager=cgroupfs", "--runtime", "runc"]
    load = subprocess.run(base + ["load", "-q", "-i", f"{archive}"], capture_output=True, text=True)
    if load.returncode != 0:
        return f"podman load failed: {load.stderr.strip()[:200]}"
    image = load.stdout.strip().split()[-1]
    run = base + ["run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    out: dict[str, list[float]] = {"none": [], "bridge": [], "bridge -p": []}
    try:
        for _ in range(runs + 1):  # the first round warms caches and creates podman0
            for key, extra in (("none", ["--network", "none"]), ("bridge", ["--network", "bridge"]),
                               ("bridge -p", ["--network", "bridge", "-p", "8080:80"])):
                t = time.perf_counter()
                p = subprocess.run(run + extra + [image, "true"], capture_output=True, text=True)
                dt = time.perf_counter() - t
                if p.returncode != 0:
                    return f"podman run failed: {p.stderr.strip()[:300]}"
                out[key].append(dt)
    finally:
        subprocess.run(base + ["system", "reset", "-f"], capture_output=True)
    return {k: v[1:] for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--podman-runs", type=int, default=7)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    isolate()
    work = Path(tempfile.mkdtemp(prefix="bench-network-", dir="/var/tmp"))
    try:
        vm = bench_volmerge(work, args.cycles)
        ip = bench_iproute2(args.cycles)
        pm = bench_podman(work, args.podman_runs)
    finally:
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)
    print(f"median of {args.cycles} cycles (volmerge, iproute2) / {args.podman_runs} runs (podman)")
    print(f"volmerge connect()            {ms(vm['connect'])}")
    print(f"volmerge connect() with -p    {ms(vm['connect -p'])}")
    print(f"volmerge connect('none')      {ms(vm['connect none'])}")
    print(f"volmerge disconnect()         {ms(vm['disconnect'])}")
    print(f"volmerge disconnect() with -p {ms(vm['disconnect -p'])}")
    print(f"iproute2 shell-outs connect   {ms(ip['connect'])}"
          f"   ratio iproute2/volmerge {statistics.median(ip['connect']) / statistics.median(vm['connect']):.1f}x")
    print(f"iproute2 shell-outs with nft  {ms(ip['connect -p'])}"
          f"   ratio {statistics.median(ip['connect -p']) / statistics.median(vm['connect -p']):.1f}x")
    print(f"iproute2 teardown             {ms(ip['disconnect'])}")
    if isinstance(pm, str):
        print(f"podman: skipped ({pm})")
    else:
        net = statistics.median(pm["bridge"]) - statistics.median(pm["none"])
        netp = statistics.median(pm["bridge -p"]) - statistics.median(pm["none"])
        print(f"podman run --network none     {ms(pm['none'])}")
        print(f"podman run --network bridge   {ms(pm['bridge'])}   networking ~{net * 1000:.1f} ms"
              f"   ratio podman/volmerge {net / statistics.median(vm['connect']):.1f}x")
        print(f"podman run bridge -p 8080:80  {ms(pm['bridge -p'])}   networking ~{netp * 1000:.1f} ms"
              f"   ratio {netp / statistics.median(vm['connect -p']):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
