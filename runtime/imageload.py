"""The way into the image store: staged images checked, layers extracted, one commit.

``image load`` (an archive or OCI layout staged by :mod:`runtime.oci`),
``volmerge pull`` (blobs staged by the registry client while they download)
and ``ImageStore.import_dir`` all end in :func:`load_staged`, so every image
gets the same checks.  Not on the ``run`` path: ``runtime.images`` imports
this module inside the methods that load.

Layers are extracted several at a time (:data:`EXTRACT_JOBS` threads: most
of an extraction is file-creating system calls, which run without the GIL)
into marked work directories under ``tmp/``; a pulled layer is extracted
from its stream while it downloads.  Then, once every layer is extracted and
checked against its diff_id and every blob has passed its digest, one
``syncfs`` makes all of it durable, the layers go into place and their rows
are written, and the blobs, image, tags and repository digest are committed
in one transaction under the ``images`` lock.  On any failure the other
extractions stop, the work directories go, and layers this load installed
for an image it did not commit are removed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import atomicfile, oci
from .errors import BadInput
from .layers import work_dir

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .images import Image, ImageStore
    from .tarsafe import Extracted

EXTRACT_JOBS = 3   # layers extracted at once (as many as a pull downloads)

Progress = Callable[[str, int, int], None]   # (label, bytes done, bytes total)


class Streaming(Protocol):
    """A layer blob being downloaded: ``reader`` gives its bytes as they
    arrive; ``finish()`` blocks until the whole blob is verified (or raises)."""

    @property
    def reader(self) -> Any: ...  # pragma: no cover - interface

    def finish(self) -> None: ...  # pragma: no cover - interface


# Called before a staged layer blob is extracted: returns None once the blob is
# in place and verified, or a stream of it still downloading (a pull extracts
# while it downloads).
BlobReady = Callable[[oci.Blob], "Streaming | None"]


@dataclass
class Plan:
    """What an image load will commit: the staged archive and its layers."""

    staged: oci.Staged
    config: dict[str, Any]
    layers: list[tuple[str, oci.Blob]]   # (diff_id, blob), bottom-most first
    names: list[str] = field(default_factory=list)
    created: str | None = None


@dataclass(frozen=True)
class _Job:
    diff_id: str
    blob: oci.Blob
    label: str


def load_staged(images: ImageStore, staged: list[oci.Staged], tag: str | None = None,
                progress: Progress | None = None, *, ready: BlobReady | None = None,
                repo_digest: tuple[str, str] | None = None,
                cancel: threading.Event | None = None) -> list[Image]:
    """See :meth:`ImageStore.load_staged`.  ``cancel`` is set when one
    layer fails, to stop the others (a pull's downloads watch it too)."""
    from .images import new_name

    new_tag = new_name(tag) if tag is not None else None
    plans = [plan(s) for s in staged]
    all_layers = {d for p in plans for d, _b in p.layers}
    installed: list[str] = []
    try:
        with images.layers.locked(all_layers), contextlib.ExitStack() as works:
            done = _extract_all(images, _jobs(images, plans), works, progress, ready,
                                cancel or threading.Event())
            if ready is not None:  # every blob, even of a layer that was present
                for p in plans:
                    for _d, blob in p.layers:
                        src = ready(blob)
                        if src is not None:
                            src.finish()
            _make_durable(images, plans, bool(done))
            images.layers.install(done)
            installed = [d for d, _w, _g in done]
            with images.store.lock("images"):
                commit(images, plans, new_tag, repo_digest)
    except BaseException:
        # nothing partial: layers this load extracted for an image that
        # never got committed go again (unless someone else uses them now)
        images.layers.remove_unused(installed)
        raise
    out = [images._load_row(p.staged.config.digest[7:]) for p in plans]
    return [img for img in out if img is not None]


def _jobs(images: ImageStore, plans: list[Plan]) -> list[_Job]:
    """The layers to extract, bottom first, each once."""
    n = sum(len(p.layers) for p in plans)
    jobs: dict[str, _Job] = {}
    k = 0
    for p in plans:
        for diff_id, blob in p.layers:
            k += 1
            if diff_id not in jobs and not images.layers.present(diff_id):
                jobs[diff_id] = _Job(diff_id, blob, f"layer {k}/{n} ({blob.digest[7:19]})")
    return list(jobs.values())


def _extract_all(images: ImageStore, jobs: list[_Job], works: contextlib.ExitStack,
                 progress: Progress | None, ready: BlobReady | None,
                 cancel: threading.Event) -> list[tuple[str, Path, Extracted]]:
    """Extract ``jobs`` in threads, each into a work directory that ``works``
    holds; the first failure (in time) is raised once all have stopped."""
    if not jobs:
        return []
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    futures: list[Future[Extracted]] = []
    dirs: list[Path] = []
    with _Flusher(images.store.path("tmp")) as flusher, ThreadPoolExecutor(
            max_workers=min(EXTRACT_JOBS, len(jobs)), thread_name_prefix="extract") as pool:
        try:
            for job in jobs:
                work = works.enter_context(work_dir(images.store, "layer-"))
                dirs.append(work)
                src = ready(job.blob) if ready is not None else None
                cb = None if progress is None else functools.partial(progress, job.label)
                futures.append(pool.submit(
                    images.layers.extract, job.diff_id,
                    job.blob.path if src is None else src.reader, work, label=job.label,
                    progress=cb, size=job.blob.size,
                    verified=None if src is None else src.finish))
                futures[-1].add_done_callback(flusher.kick)
            first, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            cancel.set()
            raise
        failed = [f for f in futures if f in first and f.exception() is not None]
        if failed:
            cancel.set()   # the others stop (a stream raises at its next read)
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return [(j.diff_id, d, f.result()) for j, d, f in zip(jobs, dirs, futures)]


class _Flusher:
    """``syncfs`` of the store's file system in a thread of its own, asked for
    each time a layer is extracted: what is written goes to disk while later
    layers are still being extracted and downloaded, so the ``syncfs`` before
    the commit (:func:`_make_durable`, which alone vouches for durability)
    finds little left to write.  Without it all of a pull's data would wait
    for that last call (the kernel starts writing back only past its dirty
    threshold, gigabytes on a large machine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wanted = threading.Event()
        self.stop = False
        self.t = threading.Thread(target=self._run, name="extract-flush", daemon=True)

    def __enter__(self) -> _Flusher:
        self.t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop = True
        self.wanted.set()
        self.t.join()

    def kick(self, _done: object = None) -> None:
        self.wanted.set()

    def _run(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            if self.stop:
                return
            with contextlib.suppress(OSError):
                atomicfile.syncfs(self.path)


def _make_durable(images: ImageStore, plans: list[Plan], extracted: bool) -> None:
    """Everything the commit will point at on disk before it: after an
    extraction one ``syncfs`` (the layers' trees and the staged blobs are on
    the store's file system), else an fsync of each staged blob (a pull
    whose layers were all present: no need to wait for others' writes)."""
    if extracted:
        atomicfile.syncfs(images.store.path("tmp"))
        return
    blobs_dir = images.store.path("blobs", "sha256")
    for p in plans:
        for b in [p.staged.manifest, p.staged.config] + [b for _d, b in p.layers]:
            if b.path.exists() and not (blobs_dir / b.digest[7:]).exists():
                fd = os.open(b.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def blob_for_layer(images: ImageStore, digest: str, diff_id: str) -> Path | None:
    """The stored blob ``digest`` if an image already has it as the layer
    ``diff_id`` (so a pull need not download it again), else None."""
    row = images.store.db.execute(
        "SELECT 1 FROM image_layers WHERE digest = ? AND diff_id = ? LIMIT 1",
        (digest, diff_id),
    ).fetchone()
    if row is None:
        return None
    p = images.store.path("blobs", "sha256", oci.digest_hex(digest))
    return p if p.is_file() and images.layers.present(diff_id) else None


def plan(s: oci.Staged) -> Plan:
    """Check a staged image's config against its manifest."""
    from .images import new_name

    cfg = oci.parse_json(s.config_bytes, f"image config {s.config.digest}")
    if not isinstance(cfg, dict):
        raise BadInput(f"image config {s.config.digest} is not an object")
    rootfs = cfg.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(
        rootfs.get("diff_ids"), list
    ):
        raise BadInput(f"image config {s.config.digest} has no rootfs.diff_ids")
    diff_ids = rootfs["diff_ids"]
    for d in diff_ids:
        oci.digest_hex(d, "diff_id")
    if len(diff_ids) != len(s.layers):
        raise BadInput(
            f"image config {s.config.digest} lists {len(diff_ids)} diff_ids "
            f"but the manifest has {len(s.layers)} layers"
        )
    if len(diff_ids) > 500:
        raise BadInput(f"image has {len(diff_ids)} layers; overlayfs takes at most 500")
    names = []
    for n in s.names:
        if "/" not in n and ":" not in n:
            continue  # an OCI ref.name that is only a tag ("latest"): no repository
        try:
            names.append(new_name(n))
        except BadInput:
            continue  # e.g. a bare "latest" from an OCI layout: not a full name
    created = cfg.get("created") if isinstance(cfg.get("created"), str) else None
    return Plan(s, cfg, list(zip(diff_ids, s.layers)), names, created)


def commit(images: ImageStore, plans: list[Plan], new_tag: str | None,
           repo_digest: tuple[str, str] | None = None) -> None:
    """Under the ``images`` lock: blobs into place, then one transaction."""
    blobs_dir = images.store.path("blobs", "sha256")
    moved = False
    for p in plans:
        for b in [p.staged.manifest, p.staged.config] + [b for _d, b in p.layers]:
            final = blobs_dir / b.digest[7:]
            if not final.exists() and b.path.exists():
                os.rename(b.path, final)
                moved = True
    if moved:  # else the directory is as it was (another tag of an image it has)
        atomicfile.fsync_dir(blobs_dir)
    now = time.time()
    with images.store.transaction() as db:
        for i, p in enumerate(plans):
            image_id = p.staged.config.digest[7:]
            exists = db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
            if not exists:
                size = sum(images.layers.size(d) for d, _b in p.layers)
                db.execute(
                    "INSERT INTO images(id, manifest_digest, manifest_media_type, manifest_size,"
                    " config, size, created, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (image_id, p.staged.manifest.digest, p.staged.manifest_media_type,
                     p.staged.manifest.size, p.staged.config_bytes.decode("utf-8", "replace"),
                     size, p.created, now + i * 1e-6),
                )
                db.executemany(
                    "INSERT INTO image_layers(image_id, position, diff_id, digest, media_type,"
                    " blob_size) VALUES (?, ?, ?, ?, ?, ?)",
                    [(image_id, pos, d, b.digest, b.media_type or oci.OCI_LAYER, b.size)
                     for pos, (d, b) in enumerate(p.layers)],
                )
            for name in p.names + ([new_tag] if new_tag else []):
                db.execute(
                    "INSERT INTO tags(name, image_id, tagged_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id,"
                    " tagged_at = excluded.tagged_at",
                    (name, image_id, now),
                )
            if repo_digest is not None:
                db.execute(
                    "INSERT INTO repo_digests(image_id, repository, digest, pulled_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(image_id, repository) DO UPDATE"
                    " SET digest = excluded.digest, pulled_at = excluded.pulled_at",
                    (image_id, repo_digest[0], repo_digest[1], now),
                )


def import_dir(images: ImageStore, src: str | os.PathLike[str], tag: str | None = None,
               config: dict[str, Any] | None = None) -> Image:
    """Build a one-layer image from a directory (owners, modes and
    symlinks as they are on disk) and load it.  ``config`` is the
    ``config`` section (Cmd, Env, ...).  Handy for tests and fixtures."""
    src = Path(src)
    if not src.is_dir():
        raise BadInput(f"{src} is not a directory")
    with work_dir(images.store, "import-") as work:
        layer = work / "layer.tar"
        import tarfile

        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
            for entry in sorted(os.listdir(src)):
                tf.add(src / entry, arcname=entry, recursive=True)
        diff_id = file_digest(layer)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cfg = {
            "created": created,
            "architecture": oci.host_arch(),
            "os": "linux",
            "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"volmerge import_dir {src.name}"}],
        }
        cbytes = oci.canonical_json(cfg)
        layout = work / "oci"
        (layout / "blobs" / "sha256").mkdir(parents=True)
        os.rename(layer, layout / "blobs" / "sha256" / diff_id[7:])
        (layout / "blobs" / "sha256" / oci.sha256_bytes(cbytes)[7:]).write_bytes(cbytes)
        manifest = oci.canonical_json({
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": oci.sha256_bytes(cbytes),
                       "size": len(cbytes)},
            "layers": [{"mediaType": oci.OCI_LAYER, "digest": diff_id,
                        "size": os.path.getsize(layout / "blobs" / "sha256" / diff_id[7:])}],
        })
        (layout / "blobs" / "sha256" / oci.sha256_bytes(manifest)[7:]).write_bytes(manifest)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (layout / "index.json").write_bytes(oci.canonical_json({
            "schemaVersion": 2,
            "manifests": [{"mediaType": oci.OCI_MANIFEST, "digest": oci.sha256_bytes(manifest),
                           "size": len(manifest)}],
        }))
        return images.load(layout, tag=tag)


def file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
