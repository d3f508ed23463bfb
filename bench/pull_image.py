"""The image of the pull benchmark: ~400 MB in 10 gzip layers, built once.

Content is made from a seeded generator, so every machine builds the same
bytes (and the same digests): a base layer of many small files as an OS
image has, library-like layers (binary blocks mixed with zero runs and
text), many small text files (a language runtime), a few large
incompressible files (archives, models), large compressible ones (logs,
data), symlinks, hardlinks, an opaque directory and whiteouts of earlier
layers' files.  Each layer is kept both as the uncompressed tar (for the
extraction comparison with ``tar -x``) and as the ``gzip -6 -n`` blob a
``podman push``/``docker push`` would send.  Two images share the layers:
tag ``1`` and tag ``2`` (another config), for a warm pull.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

VERSION = 2   # bump when the recipe changes: a new cache entry
MTIME = 1_700_000_000

# (name, MB, files, kind): kind is the mix of content of the layer's files
LAYERS = [
    ("base", 90, 8000, "os"),
    ("libs", 60, 600, "binary"),
    ("runtime", 50, 6000, "text"),
    ("model", 60, 3, "random"),
    ("data", 40, 2, "text"),
    ("app", 30, 1500, "os"),
    ("deps", 25, 4000, "text"),
    ("assets", 20, 20, "random"),
    ("patch", 15, 300, "binary"),
    ("config", 10, 800, "os"),
]


@dataclass(frozen=True)
class BuiltLayer:
    tar: Path        # the uncompressed layer
    blob: Path       # its gzip blob
    diff_id: str
    digest: str
    size: int        # uncompressed bytes
    blob_size: int


@dataclass(frozen=True)
class BuiltImage:
    layout: Path     # an OCI layout with the refs "1" and "2"
    layers: list[BuiltLayer]

    @property
    def size(self) -> int:
        return sum(x.size for x in self.layers)

    @property
    def blob_size(self) -> int:
        return sum(x.blob_size for x in self.layers)


class _Content:
    """Seeded data: an 8 MiB random block and an 8 MiB block of words."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.rnd = rng.randbytes(8 << 20)
        words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12)))
                 for _ in range(5000)]
        out = bytearray()
        while len(out) < (8 << 20):
            line = b" ".join(rng.choices(words, k=rng.randint(3, 14)))
            out += b"    " * rng.randint(0, 3) + line + b"\n"
        self.txt = bytes(out[: 8 << 20])

    def data(self, kind: str, size: int, seed: int) -> bytes:
        if kind == "os":
            kind = ("text", "binary", "text", "random")[seed % 4]
        src = {"text": self.txt, "random": self.rnd}.get(kind)
        if src is None:   # binary: random and zero runs and text, 4 KiB blocks
            parts, n, i = [], 0, seed
            while n < size:
                k = i % 3
                off = (i * 7919) % ((8 << 20) - 4096)
                parts.append(self.rnd[off:off + 4096] if k == 0 else
                             bytes(4096) if k == 1 else self.txt[off:off + 4096])
                n += 4096
                i += 1
            return b"".join(parts)[:size]
        off = (seed * 104729) % len(src)
        out = bytearray()
        while len(out) < size:
            out += src[off:off + size - len(out)]
            off = (off * 31 + 12345) % len(src)
        return bytes(out)


def _sizes(rng: random.Random, total: int, files: int) -> list[int]:
    """Mixed sizes: log-normal around a few kB, the rest of the bytes in the
    largest files (as in real images: most files small, most bytes big)."""
    if files <= 20:
        return [total // files] * files
    small = [min(int(rng.lognormvariate(8.3, 1.5)), 1 << 20) for _ in range(files)]
    share = total * 0.35 / max(1, sum(small))
    small = [max(0, int(s * share)) for s in small]
    big_n = max(1, files // 100)
    rest = total - sum(small)
    for _i in range(big_n):
        small[rng.randrange(files)] += rest // big_n
    return small


def _write_tar(path: Path, index: int, mb: int, files: int, kind: str, c: _Content) -> None:
    rng = random.Random(1000 + index)
    sizes = _sizes(rng, mb << 20, files)
    ndirs = max(1, files // 40)
    top = f"l{index}"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, type_: bytes, **kw: object) -> tarfile.TarInfo:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime, ti.mode = type_, MTIME, 0o755 if type_ == tarfile.DIRTYPE else 0o644
            for k, v in kw.items():
                setattr(ti, k, v)
            return ti

        tf.addfile(add(top, tarfile.DIRTYPE))
        for d in range(ndirs):
            if d % 20 == 0:
                tf.addfile(add(f"{top}/d{d // 20:02}", tarfile.DIRTYPE))
            tf.addfile(add(f"{top}/d{d // 20:02}/s{d:03}", tarfile.DIRTYPE, uid=d % 3, gid=d % 3))
        names = []
        for i, size in enumerate(sizes):
            d = i % ndirs
            name = f"{top}/d{d // 20:02}/s{d:03}/f{i}.{('txt', 'so', 'py', 'bin')[i % 4]}"
            mode = 0o755 if i % 7 == 0 else 0o644
            ti = add(name, tarfile.REGTYPE, size=size, mode=mode, uid=i % 2, gid=i % 2)
            if i % 500 == 1:
                ti.pax_headers = {"SCHILY.xattr.user.bench": "x" * 16}
            tf.addfile(ti, io.BytesIO(c.data(kind, size, index * 100003 + i)))
            names.append(name)
        for i in range(min(50, len(names))):
            tf.addfile(add(f"{top}/link{i}", tarfile.SYMTYPE, linkname=names[i][len(top) + 1:]))
            tf.addfile(add(f"{top}/hard{i}", tarfile.LNKTYPE, linkname=names[i]))
        if index > 0:
            # a later layer changes earlier ones: whiteouts and an opaque dir
            prev = f"l{index - 1}"
            tf.addfile(add(f"{prev}/d00/s001/.wh.f1.so", tarfile.REGTYPE))
            tf.addfile(add(f"{prev}/d00/s002", tarfile.DIRTYPE))
            tf.addfile(add(f"{prev}/d00/s002/.wh..wh..opq", tarfile.REGTYPE))
            tf.addfile(add(f"{prev}/d00/s002/new.txt", tarfile.REGTYPE, size=5),
                       io.BytesIO(b"hello"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _layout(out: Path, layers: list[BuiltLayer]) -> None:
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for x in layers:
        os.link(x.blob, blobs / x.digest[7:])
    manifests = []
    for tag in ("1", "2"):
        cfg = _json({"architecture": "amd64", "os": "linux",
                     "created": "2024-01-01T00:00:00Z",
                     "config": {"Cmd": ["/bin/sh"], "Labels": {"bench": tag}},
                     "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
                     "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]})
        cdig = "sha256:" + hashlib.sha256(cfg).hexdigest()
        (blobs / cdig[7:]).write_bytes(cfg)
        man = _json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                "digest": cdig, "size": len(cfg)},
                     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                 "digest": x.digest, "size": x.blob_size} for x in layers]})
        mdig = "sha256:" + hashlib.sha256(man).hexdigest()
        (blobs / mdig[7:]).write_bytes(man)
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": mdig, "size": len(man),
                          "annotations": {"org.opencontainers.image.ref.name": tag}})
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (out / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": manifests}))


def build(cache: Path, scale: float = 1.0) -> BuiltImage:
    """The image under ``cache`` (built on the first call; ``scale`` shrinks
    or grows every layer's bytes and file count, for quick trials)."""
    key = hashlib.sha256(f"{VERSION}\0{scale}\0{LAYERS}".encode()).hexdigest()[:12]
    root = cache / f"bench-pull-{key}"
    meta = root / "layers.json"
    if not meta.exists():
        tmp = cache / f".bench-pull-{key}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        c = _Content(42)
        built = []
        for i, (name, mb, files, kind) in enumerate(LAYERS):
            tar = tmp / f"{i:02}-{name}.tar"
            _write_tar(tar, i, max(1, int(mb * scale)), max(2, int(files * scale)), kind, c)
            blob = tar.with_suffix(".tar.gz")
            with open(blob, "wb") as f:
                subprocess.run(["gzip", "-6", "-n", "-c", str(tar)], stdout=f, check=True)
            built.append(BuiltLayer(tar, blob, _sha256(tar), _sha256(blob),
                                    tar.stat().st_size, blob.stat().st_size))
        _layout(tmp / "layout", built)
        (tmp / "layers.json").write_text(json.dumps(
            [[x.tar.name, x.blob.name, x.diff_id, x.digest, x.size, x.blob_size] for x in built]))
        os.rename(tmp, root)
    rows = json.loads(meta.read_text())
    return BuiltImage(root / "layout", [BuiltLayer(root / t, root / b, d, g, s, bs)
                                        for t, b, d, g, s, bs in rows])
