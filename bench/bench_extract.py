"""Layer extraction throughput: `volmerge image load` vs `tar -x` of the same layer.

    .venv/bin/python bench/bench_extract.py [--size-mb 300] [--files 20000] [--runs 3]

Builds one uncompressed layer of about SIZE MB in FILES files (most small,
some large, a few hardlinks and symlinks), wraps it in an OCI layout, then
times, on a fresh store each run:

- ``volmerge image load``: the whole command (stage + verify the blob,
  extract with checks, hash the diff_id, syncfs, commit);
- ``extract_layer``: the library's extraction alone (checks + diff_id hash);
- ``tar -x`` of the same layer (GNU tar as root: owners, modes, xattrs);
- ``tar -x`` followed by ``sync -f`` (same durability as volmerge's syncfs).

Prints the median of RUNS runs in MB/s (layer bytes / wall time) and the
ratios to ``tar -x``.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_layer(path: Path, size_mb: int, files: int) -> int:
    """A PAX tar of ~size_mb MB: 2% of the files are large and hold ~80% of
    the bytes; the rest are small.  Content is half random, half repetitive."""
    rnd = os.urandom(1 << 20)
    big_n = max(1, files // 50)
    small_n = files - big_n
    total = size_mb << 20
    small_size = max(1, int(total * 0.2 / max(1, small_n)))
    big_size = int(total * 0.8 / big_n)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(ti)

        def add_file(name: str, size: int, seed: int) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = size, 0o644, 1_700_000_000, seed % 3, 0
            chunk = (rnd[seed % 4096:] + rnd[: seed % 4096])[: 1 << 19] + b"a" * (1 << 19)
            reps = size // len(chunk) + 1
            tf.addfile(ti, io.BytesIO((chunk * reps)[:size]) if size < (64 << 20) else _Rep(chunk, size))

        add_dir("data")
        for d in range(100):
            add_dir(f"data/d{d:03}")
        for i in range(small_n):
            add_file(f"data/d{i % 100:03}/small{i}.txt", small_size, i)
        for i in range(big_n):
            add_file(f"data/d{i % 100:03}/big{i}.bin", big_size, i * 7919)
        for i in range(20):
            ti = tarfile.TarInfo(f"data/link{i}")
            ti.type, ti.linkname = tarfile.SYMTYPE, f"d000/small{i}.txt"
            tf.addfile(ti)
            ti = tarfile.TarInfo(f"data/hard{i}")
            ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, f"data/d{i % 100:03}/small{i}.txt", 0o644
            tf.addfile(ti)
    return path.stat().st_size


class _Rep(io.RawIOBase):
    def __init__(self, chunk: bytes, size: int) -> None:
        self.chunk, self.left = chunk, size

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = min(self.left, len(self.chunk) if n < 0 else min(n, len(self.chunk)))
        self.left -= n
        return self.chunk[:n]


def make_layout(layer: Path, out: Path) -> None:
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    os.link(layer, blobs / digest[7:])
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    cdig = "sha256:" + hashlib.sha256(cfg).hexdigest()
    (blobs / cdig[7:]).write_bytes(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": cdig, "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                  "digest": digest, "size": layer.stat().st_size}]}).encode()
    mdig = "sha256:" + hashlib.sha256(man).hexdigest()
    (blobs / mdig[7:]).write_bytes(man)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig, "size": len(man),
         "annotations": {"org.opencontainers.image.ref.name": "bench/layer:1"}}]}))


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()

    from volmerge.runtime.tarsafe import extract_layer

    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.dir))
    try:
        layer = work / "layer.tar"
        t = timed(lambda: build_layer(layer, args.size_mb, args.files))
        size = layer.stat().st_size
        mb = size / 1e6
        print(f"layer: {mb:.0f} MB, {args.files} files (built in {t:.1f} s)")
        layout = work / "layout"
        make_layout(layer, layout)
        results: dict[str, list[float]] = {k: [] for k in
                                           ("volmerge image load", "extract_layer", "tar -x", "tar -x + sync")}
        vm = [sys.executable, "-m", "volmerge"]
        names = list(results)
        for run in range(args.runs):
            # rotate the order so that no tool always runs after the same one
            for name in names[run % len(names):] + names[: run % len(names)]:
                out = work / f"out-{run}"
                if name == "volmerge image load":
                    env = dict(os.environ, VOLMERGE_ROOT=str(out))
                    dt = timed(lambda: subprocess.run([*vm, "image", "load", str(layout)], env=env,
                                                      check=True, stdout=subprocess.DEVNULL))
                elif name == "extract_layer":
                    out.mkdir()
                    dt = timed(lambda: extract_layer(layer, out))
                else:
                    out.mkdir()
                    cmd = ["tar", "-x", "-f", str(layer), "-C", str(out), "--xattrs"]
                    if name.endswith("sync"):
                        dt = timed(lambda: (subprocess.run(cmd, check=True),
                                            subprocess.run(["sync", "-f", str(out)], check=True)))
                    else:
                        dt = timed(lambda: subprocess.run(cmd, check=True))
                results[name].append(dt)
                shutil.rmtree(out)
                subprocess.run(["sync", "-f", str(work)], check=True)
        base = statistics.median(results["tar -x"])
        print(f"{'':24}{'median s':>10}{'MB/s':>10}{'vs tar -x':>11}")
        for name, times in results.items():
            med = statistics.median(times)
            print(f"{name:24}{med:>10.2f}{mb / med:>10.0f}{base / med:>10.2f}x")
        print(f"ratio: volmerge image load runs at {base / statistics.median(results['volmerge image load']):.2f}x "
              f"the speed of tar -x ({args.runs} runs, median)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
