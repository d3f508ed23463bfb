"""`volmerge pull` vs `podman pull` of the same image from the same registry.

    .venv/bin/python bench/bench_pull.py [--kind python] [--runs 3]

Starts Debian's docker-registry on 127.0.0.1 (TLS with a CA made here, no
auth; the harness of tests/registry), copies a fixture image into it with
skopeo, then times, each run on a fresh store: ``volmerge pull`` (download,
verify, extract with the hostile-archive checks, commit) and ``podman pull``
(an isolated podman, tests/podman.py, overlay driver, so layers are
extracted once as ours are).  Prints the medians and the ratio.  Not part
of the test run; run as root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="python", help="fixture image kind (fixtures/images.py)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    args = ap.parse_args()

    from tests.podman import Podman
    from tests.registry.server import Registry, make_pki
    from volmerge.fixtures.images import image_archive

    base = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=args.dir))
    archive = image_archive(args.kind)
    reg = Registry(base / "registry", make_pki(base / "pki"), auth=False)
    seed = Podman(base / "seed")
    try:
        ref = reg.ref(f"bench/{args.kind}:1")
        reg.skopeo_copy(seed, f"oci-archive:{archive}", f"bench/{args.kind}:1")
        env = dict(os.environ, VOLMERGE_CERTS_D=str(reg.certs_d),
                   REGISTRY_AUTH_FILE=str(base / "auth.json"))
        ours, theirs = [], []
        for i in range(args.runs):
            root = base / f"store{i}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "volmerge", "--root", str(root), "pull", "-q",
                            ref], env=env, check=True, capture_output=True)
            ours.append(time.perf_counter() - t0)
            pm = Podman(base / f"podman{i}", driver="overlay")
            try:
                t0 = time.perf_counter()
                pm("pull", "-q", "--cert-dir", str(reg.cert_dir), ref)
                theirs.append(time.perf_counter() - t0)
            finally:
                pm.close()
            subprocess.run(["rm", "-rf", str(root)], check=True)
        size = archive.stat().st_size / 1e6
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"image {args.kind}: {size:.1f} MB archive, {args.runs} runs, medians:")
        print(f"  volmerge pull  {a:6.2f} s")
        print(f"  podman pull    {b:6.2f} s")
        print(f"  ratio (volmerge / podman) {a / b:.2f}")
    finally:
        reg.stop()
        seed.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
