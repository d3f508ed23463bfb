"""``volmerge pull``: an image from a registry into the image store.

The manifest (the platform's, out of an index) and the config are fetched
and verified first (the config is read from the store when an image there
has it); then the layers are downloaded in parallel into a
staging directory under the store's ``tmp/`` while the image store extracts
them in order, each as soon as it is complete and verified
(``ImageStore.load_staged``: the very path ``image load`` takes, with the
same hostile-archive checks and the same commit).  A layer whose blob an
image of the store already has (same digest, same diff_id) is not
downloaded again.  On any failure the other transfers stop, the staging
directory goes, and the layers extracted for this pull are removed: the
store is as it was.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import oci
from ..errors import BadInput, NotDone
from ..images import Image, ImageStore
from ..layers import work_dir
from . import manifests, partial, reference
from .auth import find_credentials
from .blobs import Download, Follower, Report, fetch_small
from .transport import Session, TlsOptions

JOBS = 3   # parallel downloads, as Docker's max-concurrent-downloads


@dataclass(frozen=True)
class PullOptions:
    platform: str | None = None
    tls: TlsOptions = field(default_factory=TlsOptions)
    authfile: str | None = None
    jobs: int = JOBS


@dataclass(frozen=True)
class Pulled:
    image: Image
    ref: reference.Reference
    digest: str              # what the reference resolved to (index or manifest)
    downloaded: int          # layers fetched
    reused: int              # layers the store already had


def _quiet(_digest: str, _status: str, _done: int, _total: int) -> None:
    pass


def pull(images: ImageStore, ref: str, opts: PullOptions = PullOptions(),
         report: Report = _quiet) -> Pulled:
    r = reference.parse(ref)
    platform = manifests.parse_platform(opts.platform)
    creds = find_credentials(r.registry, r.repository, opts.authfile)
    scope = f"repository:{r.repository}:pull"
    # one request after another until the blobs: HTTP/2 would multiplex nothing
    with Session(r.registry, r.api_host, creds=creds, tls=opts.tls, http2=False) as s:
        top = manifests.fetch(s, r.repository, r.reference, scope, f"manifest {r}")
        m = top
        for depth in range(3):
            if m.media_type not in oci.INDEX_TYPES:
                break
            if depth == 2:
                raise BadInput(f"{r}: image indexes nested too deep")
            d = manifests.choose(m, platform, f"image index {r}")
            m = manifests.fetch(s, r.repository, d["digest"], scope, f"manifest {d['digest'][:19]}")
            if m.digest != d["digest"] or len(m.data) != d["size"]:
                raise BadInput(f"manifest {d['digest']}: size mismatch with its index entry")
        what = f"manifest {m.digest[:19]}"
        (cdigest, csize), layers = manifests.check_manifest(m, what)
        config = _stored(images, cdigest, csize) or fetch_small(
            s, r.repository, scope, cdigest, csize, manifests.MAX_CONFIG,
            f"config {cdigest[:19]}")
        with work_dir(images.store, "pull-") as staging:
            staged = _stage(staging, m, cdigest, config, layers)
            return _transfer(images, s, r, scope, top.digest, staged, config, opts, report)


def _stored(images: ImageStore, digest: str, size: int) -> bytes | None:
    """The config blob ``digest`` if the store has it (another tag of the
    same image, pulled or loaded): hashed again, not downloaded.  None when
    absent, of another size or content (then it is fetched and verified)."""
    import hashlib

    if size > manifests.MAX_CONFIG:
        return None   # fetch_small says it is too large
    try:
        with open(images.store.path("blobs", "sha256", oci.digest_hex(digest)), "rb") as f:
            data = f.read(size + 1)
    except OSError:
        return None
    if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        return None
    return data


def _stage(staging: os.PathLike[str], m: manifests.Fetched, cdigest: str, config: bytes,
           layers: list[manifests.LayerRef]) -> oci.Staged:
    from pathlib import Path

    d = Path(staging)
    mpath = d / m.digest[7:]
    mpath.write_bytes(m.data)
    cpath = d / cdigest[7:]
    cpath.write_bytes(config)
    return oci.Staged(
        manifest=oci.Blob(m.digest, len(m.data), mpath, m.media_type),
        manifest_bytes=m.data,
        config=oci.Blob(cdigest, len(config), cpath, oci.OCI_CONFIG),
        config_bytes=config,
        layers=[oci.Blob(x.digest, x.size, d / x.digest[7:], x.media_type) for x in layers],
    )


def _transfer(images: ImageStore, s: Session, r: reference.Reference, scope: str,
              top_digest: str, staged: oci.Staged, config: bytes, opts: PullOptions,
              report: Report) -> Pulled:
    ids = manifests.diff_ids(config) or []
    cancel = threading.Event()
    futures: dict[str, Future[object]] = {}
    downloads: dict[str, Download] = {}
    reused = 0
    kept: set[str] = set()    # resumed from an earlier pull's bytes: extracted once verified
    partial.sweep(images.store)
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="pull") as pool:
        try:
            for i, blob in enumerate(staged.layers):
                if blob.digest in futures or blob.path.exists():
                    continue  # the same blob twice in one manifest
                have = images.blob_for_layer(blob.digest, ids[i]) if i < len(ids) else None
                if have is not None:
                    try:
                        os.link(have, blob.path)
                        reused += 1
                        report(blob.digest, "exists", blob.size, blob.size)
                        continue
                    except FileNotFoundError:
                        pass  # removed meanwhile: download it
                report(blob.digest, "waiting", 0, blob.size)
                dl = Download(s, r.repository, scope, blob.digest, blob.size, blob.path,
                              report, cancel)
                if partial.take(images.store, blob.digest, dl.part):   # an earlier pull's
                    kept.add(blob.digest)
                downloads[blob.digest] = dl
                futures[blob.digest] = pool.submit(dl.run)

            def ready(blob: oci.Blob) -> Follower | None:
                """The blob as a stream while it downloads (extraction starts
                at once; the layer goes into place only once it is verified)."""
                fut = futures.get(blob.digest)
                if fut is None or fut.done() or blob.digest in kept:
                    if fut is not None:
                        fut.result()
                    return None
                return Follower(downloads[blob.digest], fut.result)

            def extracting(label: str, done: int, total: int) -> None:
                m = re.search(r"\(([0-9a-f]{12})\)", label)
                if m:
                    report(m.group(1), "extracting", done, total)

            loaded = images.load_staged([staged], tag=r.local_tag, progress=extracting,
                                        ready=ready, repo_digest=(r.name, top_digest),
                                        cancel=cancel)
        except BaseException as exc:
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, (NotDone, KeyboardInterrupt)) and not isinstance(exc, BadInput):
                partial.keep(images.store, [(d, dl.dest if dl.dest.exists() else dl.part)
                                            for d, dl in downloads.items()])
            _no_space(images, exc, r, downloads)
            raise
    for blob in staged.layers:
        report(blob.digest, "done", blob.size, blob.size)
    return Pulled(loaded[0], r, top_digest, len(futures), reused)


def _no_space(images: ImageStore, exc: BaseException, r: reference.Reference,
              downloads: dict[str, Download]) -> None:
    """A full disk: raise the one line naming the file system and about what
    the pull needs (each blob downloaded, and once more extracted as a layer)."""
    from .. import diskspace

    if isinstance(exc, diskspace.NoSpace) or not diskspace.is_no_space(exc):
        return
    need = 2 * sum(dl.size for dl in downloads.values())
    raise diskspace.no_space(images.store.root, needed=need, what=f"pull of {r}") from None
