"""``volmerge push``: an image of the store to a registry.

The blobs go as the store keeps them (the manifest bytes unchanged), so the
pushed manifest has the image's own manifest digest and ``podman pull`` of
it gives the same image id.  Blobs the repository already has (HEAD) are
not uploaded; a blob another repository of the registry is known to have is
mounted from it (``mount.py``); the others go in parallel, each as one
monolithic PUT; the manifest goes last, so a failed push never leaves a tag
naming missing blobs.

The store keeps one platform's image per pull (``pull`` picks it out of an
index), never an image index: there is no index of the store to push.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, NotFound
from ..images import ImageStore
from . import mount, reference
from .auth import find_credentials
from .blobs import Report, exists, upload
from .manifests import MAX_MANIFEST
from .transport import Session, TlsOptions, retrying

JOBS = 3


@dataclass(frozen=True)
class PushOptions:
    tls: TlsOptions = field(default_factory=TlsOptions)
    authfile: str | None = None
    jobs: int = JOBS


@dataclass(frozen=True)
class Pushed:
    ref: reference.Reference
    digest: str          # the manifest's, as the registry now serves it
    uploaded: int
    skipped: int
    mounted: int = 0


def _quiet(_digest: str, _status: str, _done: int, _total: int) -> None:
    pass


def push(images: ImageStore, src: str, dest: str | None = None,
         opts: PushOptions = PushOptions(), report: Report = _quiet) -> Pushed:
    img = images.get(src)
    r = reference.parse(dest if dest is not None else src)
    if dest is None and "/" not in src.split(":", 1)[0] and "." not in src.split("/")[0]:
        raise BadInput(f"push {src}: name a destination (REGISTRY/NAME[:TAG])")
    if r.digest is not None:
        raise BadInput(f"push destination {r} names a digest; give a tag")
    blob_dir = images.store.path("blobs", "sha256")
    mpath = blob_dir / img.manifest_digest[7:]
    manifest = _read_verified(mpath, img.manifest_digest, MAX_MANIFEST)
    blobs = [(img.digest, blob_dir / img.id)]
    blobs += [(layer.digest, blob_dir / layer.digest[7:]) for layer in img.layers]
    for digest, path in blobs:
        if not path.is_file():
            raise NotFound(f"blob {digest} of image {img.short_id} is missing from the store")
    creds = find_credentials(r.registry, r.repository, opts.authfile)
    scope = f"repository:{r.repository}:pull,push"
    cancel = threading.Event()
    uploaded = skipped = mounted = 0
    unique = list(dict.fromkeys(blobs))
    candidates = mount.sources(images, r, [d for d, _p in unique])
    with Session(r.registry, r.api_host, creds=creds, tls=opts.tls) as s:
        # one authenticated request first, so the parallel ones share its token
        present = exists(s, r.repository, scope, unique[0][0], f"blob {unique[0][0][:19]}")

        def one(item: tuple[str, Path]) -> str:
            digest, path = item
            what = f"blob {digest[:19]}"
            if (digest == unique[0][0] and present) or exists(s, r.repository, scope, digest, what):
                report(digest, "exists", 0, 0)
                return "exists"
            source, location = mount.mount_or_start(s, r.repository, digest,
                                                    candidates.get(digest, []), what)
            if source is not None:
                report(digest, "mounted", 0, 0)
                return "mounted"
            upload(s, r.repository, scope, digest, path, report, cancel, location)
            return "uploaded"

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="push") as pool:
            futures = [pool.submit(one, item) for item in unique]
            try:
                for f in futures:
                    how = f.result()
                    uploaded += how == "uploaded"
                    mounted += how == "mounted"
                    skipped += how == "exists"
            except BaseException:
                cancel.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        digest = _put_manifest(s, r, scope, manifest, img.manifest_media_type)
    mount.remember(images, r, [d for d, _p in unique])
    return Pushed(r, digest, uploaded, skipped, mounted)


def _read_verified(path: Path, digest: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"manifest {digest} is missing from the store") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise BadInput(f"manifest {digest} in the store does not match its digest")
    return data


def _put_manifest(s: Session, r: reference.Reference, scope: str, data: bytes,
                  media_type: str) -> str:
    what = f"manifest for {r}"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def once() -> None:
        with s.stream("PUT", f"/v2/{r.repository}/manifests/{r.tag or 'latest'}", scope,
                      headers={"Content-Type": media_type}, content=data, what=what) as resp:
            s.check(resp, what)
            sent = resp.headers.get("docker-content-digest")
            if sent and sent != digest:
                raise BadInput(f"{what}: the registry stored digest {sent}, ours is {digest}")

    for attempt in retrying(what):
        with attempt:
            once()
    return digest
