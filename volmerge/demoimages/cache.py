"""Image archives built on first use and cached by content.

An archive is cached under ``$VOLMERGE_FIXTURE_CACHE`` or beside this
package (``.cache/``), keyed by a hash of the inputs (paths, sizes, mtimes,
the dynamic-linker cache) and of this package's own source, so a session
builds each kind once and a rebuild only happens when the host or the
builder changed.

    image_archive("busybox")  -> Path of an oci-archive
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from volmerge.runtime.atomicfile import atomic_write
from volmerge.runtime.fsutil import flock

from .demoapp import DEMOAPP
from .kinds import KINDS, REFS, FixtureError
from .ociwriter import LayerBlob, make_layer, write_archive
from .recipes import Layer, recipe

HERE = Path(__file__).resolve().parent

_SOURCE_HASH: str | None = None
# (kind, cache dir) -> archive: this process's hits without a stat walk; tests
# clear it to force the on-disk lookup
MEMO: dict[tuple[str, str], Path] = {}


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("VOLMERGE_FIXTURE_CACHE")
    return Path(env) if env else HERE / ".cache"


def _source_hash() -> str:
    """The builder's own source: a change in it invalidates every archive."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        h = hashlib.sha256()
        files = sorted(HERE.glob("*.py")) + sorted(p for p in DEMOAPP.rglob("*")
                                                   if p.is_file() and "__pycache__" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(HERE)).encode() + b"\0" + p.read_bytes() + b"\0")
        _SOURCE_HASH = h.hexdigest()
    return _SOURCE_HASH


def _stat_line(p: str) -> str:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return f"{p}\0missing\n"
    return f"{p}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\n"


def _inputs_hash(paths: Iterable[str]) -> str:
    """Paths, sizes, modes and mtimes of every input file, and the loader cache
    (it changes whenever a shared library is installed or upgraded)."""
    h = hashlib.sha256()
    for p in [*paths, "/etc/ld.so.cache"]:
        h.update(_stat_line(p).encode())
        if os.path.isdir(p) and not os.path.islink(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for n in sorted(filenames + dirnames):
                    h.update(_stat_line(os.path.join(dirpath, n)).encode())
    return h.hexdigest()


def _layer_key(layer: Layer, compress: str) -> str:
    h = hashlib.sha256()
    h.update(f"{layer.name}\0{layer.salt}\0{compress}\0{_source_hash()}\0".encode())
    h.update(_inputs_hash(layer.inputs).encode())
    return h.hexdigest()[:24]


def _drop_stale(directory: Path, prefix: str, keep: str) -> None:
    for p in directory.glob(f"{prefix}-*"):
        if not p.name.startswith(keep) and not p.name.startswith("."):
            p.unlink(missing_ok=True)


def cached_layer(layer: Layer, cache: Path, compress: str) -> LayerBlob:
    key = _layer_key(layer, compress)
    d = cache / "layers"
    d.mkdir(parents=True, exist_ok=True)
    meta = d / f"{layer.name}-{key}.json"
    if meta.exists():
        blob = LayerBlob.from_json(json.loads(meta.read_text()))
        if blob.path.exists() and blob.path.stat().st_size == blob.size:
            return blob
    tar = d / f"{layer.name}-{key}.tar"
    fd, tmp = tempfile.mkstemp(prefix=f".{layer.name}-", suffix=".part", dir=d)
    os.close(fd)
    try:
        blob = make_layer(layer.entries(), Path(tmp), compress=compress)
        os.rename(tmp, tar)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    blob = LayerBlob(tar, blob.digest, blob.size, blob.diff_id, blob.media_type)
    atomic_write(meta, json.dumps(blob.to_json()))
    _drop_stale(d, layer.name, f"{layer.name}-{key}")
    return blob


def image_archive(kind: str, cache_dir: Path | None = None, *, compress: str = "none") -> Path:
    """Path of a cached oci-archive of a fixture ``kind`` (built on first use).

    kinds: busybox, python, postgres15, postgres16, demo-v1, demo-v2, demo-v3.
    Raises FixtureError when the host lacks an input (e.g. pgserver for
    postgres16).  Safe to call from parallel processes (a lock per kind).
    """
    if kind not in REFS:
        raise FixtureError(f"unknown fixture kind {kind!r} (kinds: {', '.join(KINDS)})")
    cache = cache_root(cache_dir).resolve()
    memo = MEMO.get((kind, str(cache)))
    if memo is not None and memo.exists():
        return memo
    cache.mkdir(parents=True, exist_ok=True)
    r = recipe(kind)
    h = hashlib.sha256(f"{kind}\0{compress}\0{r.ref}\0".encode())
    h.update(json.dumps(r.config, sort_keys=True).encode())
    for layer in r.layers:
        h.update(_layer_key(layer, compress).encode())
    out = cache / f"{kind}-{h.hexdigest()[:16]}.tar"
    if not out.exists():
        with flock(cache / f".lock-{kind}"):
            if not out.exists():
                blobs = []
                for layer in r.layers:
                    with flock(cache / f".lock-layer-{layer.name}"):
                        blobs.append(cached_layer(layer, cache, compress))
                write_archive(out, blobs, r.config, r.ref, r.history)
                _drop_stale(cache, kind, out.name)
    MEMO[(kind, str(cache))] = out
    return out
