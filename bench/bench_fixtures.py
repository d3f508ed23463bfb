"""How long a cold fixture-image build takes, against the same job done by peers.

For each kind, median of N cold builds (a fresh cache each time) of:
  volmerge  fixtures.images.image_archive(kind)            (layers + oci-archive)
  tar       `tar -cf` of the same host files               (the floor: read + write the bytes)
  podman    `podman import` of our layer tars + `podman save --format oci-archive`
            (making the same archive with podman from ready rootfs tarballs)
and a warm call (cache hit).  Run: .venv/bin/python bench/bench_fixtures.py [N]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volmerge.demoimages import cache as image_cache  # noqa: E402
from volmerge.demoimages.ociwriter import HostFile  # noqa: E402
from volmerge.fixtures import images  # noqa: E402

KINDS = ("busybox", "python", "postgres15")


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def host_files(kind: str) -> list[str]:
    out: list[str] = []
    for layer in images.recipe(kind).layers:
        out += [str(e.src) for e in layer.entries().values() if isinstance(e, HostFile)]
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = Path(tempfile.mkdtemp(prefix="vm-bench-fx-", dir="/var/tmp"))
    runroot = Path(tempfile.mkdtemp(prefix="vm-pm-", dir="/tmp"))
    # a network config dir of its own: `system reset` below removes every
    # network in it (by default the host's, /etc/cni/net.d)
    podman = ["podman", "--root", str(work / "pm"), "--runroot", str(runroot),
              "--network-config-dir", str(work / "networks"),
              "--cgroup-manager=cgroupfs", "--runtime", "runc"]
    try:
        print(f"{'kind':<11} {'size':>8} {'volmerge':>9} {'tar floor':>10} {'podman':>8} "
              f"{'warm':>8}   ratios (volmerge/tar, podman/volmerge)")
        for kind in KINDS:
            files = host_files(kind)
            lst = work / f"{kind}.list"
            lst.write_text("\n".join(files) + "\n")
            ours, floor, peer = [], [], []
            archive = None
            for i in range(n):
                cache = work / f"cache-{kind}-{i}"
                image_cache.MEMO.clear()
                ours.append(timed(lambda: images.image_archive(kind, cache)))
                archive = images.image_archive(kind, cache)
                floor.append(timed(lambda: subprocess.run(
                    ["tar", "-cf", str(work / "floor.tar"), "--no-recursion", "-P", "-T", str(lst)],
                    check=True, capture_output=True)))
                layers = sorted((cache / "layers").glob("*.tar"), key=lambda p: p.stat().st_mtime)

                def podman_job() -> None:
                    subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True)
                    for lt in layers:  # one image per layer: podman import takes one tarball
                        subprocess.run([*podman, "import", str(lt), f"localhost/bench/{lt.stem}"],
                                       check=True, capture_output=True)
                    subprocess.run([*podman, "save", "--format", "oci-archive", "-o",
                                    str(work / "peer.tar"), f"localhost/bench/{layers[-1].stem}"],
                                   check=True, capture_output=True)

                peer.append(timed(podman_job))
                (work / "peer.tar").unlink(missing_ok=True)
                if i < n - 1:
                    shutil.rmtree(cache)
            image_cache.MEMO.clear()
            warm = timed(lambda: images.image_archive(kind, work / f"cache-{kind}-{n - 1}"))
            assert archive is not None
            mo, mf, mp = (statistics.median(x) for x in (ours, floor, peer))
            print(f"{kind:<11} {archive.stat().st_size / 1e6:>6.1f}MB {mo:>8.2f}s {mf:>9.2f}s "
                  f"{mp:>7.2f}s {warm * 1000:>6.1f}ms   {mo / mf:.2f}x, {mp / mo:.2f}x")
    finally:
        subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
