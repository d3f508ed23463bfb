"""Cross-repository blob mount on push (``POST .../blobs/uploads/?mount=D&from=R``).

A blob another repository of the same registry has need not travel again:
the registry links it into the destination (``201 Created``).  Which
repository has it is known from the store: the repositories images were
pulled from (``repo_digests``) and those this store pushed to, remembered in
``<root>/registry/blob-repos.json`` (a cache, like containers/image's blob
info cache: lost or stale, it costs an upload, never correctness).  A
registry that does not mount (the source lacks the blob, no pull access
there) answers ``202`` with an upload session: the upload goes on in it, as
the spec says; a mount refused with an error falls back to a plain upload.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomicfile import atomic_write
from ..errors import NotDone
from ..images import ImageStore
from . import reference
from .transport import Session, Transient, retrying

KNOWN = ("registry", "blob-repos.json")
_MAX_REPOS = 4          # remembered per (registry, blob)
_MAX_BLOBS = 20_000     # remembered in all: the oldest go first
_MAX_FILE = 8 << 20


def _known_path(images: ImageStore) -> Path:
    return images.store.path(*KNOWN)


def _load_known(path: Path) -> dict[str, list[str]]:
    """``{"REGISTRY@sha256:...": ["repo", ...]}``; anything odd is an empty cache."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
        doc = json.loads(data) if len(data) <= _MAX_FILE else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: [r for r in v if isinstance(r, str)] for k, v in doc.items()
            if isinstance(k, str) and isinstance(v, list)}


def sources(images: ImageStore, dest: reference.Reference,
            digests: list[str]) -> dict[str, list[str]]:
    """For each blob, repositories of ``dest``'s registry that should have it
    (not ``dest``'s own), the most recently known first."""
    wanted = set(digests)
    out: dict[str, list[str]] = {d: [] for d in digests}
    known = _load_known(_known_path(images))
    for d in digests:
        for repo in reversed(known.get(f"{dest.registry}@{d}", [])):
            if repo != dest.repository and repo not in out[d]:
                out[d].append(repo)
    prefix = dest.registry + "/"
    for img in images.list():
        repos = [rd.split("@", 1)[0][len(prefix):] for rd in img.repo_digests
                 if rd.startswith(prefix)]
        repos = [r for r in repos if r and r != dest.repository]
        if not repos:
            continue
        for d in [img.digest, *(layer.digest for layer in img.layers)]:
            if d in wanted:
                out[d] += [r for r in repos if r not in out[d]]
    return out


def remember(images: ImageStore, dest: reference.Reference, digests: list[str]) -> None:
    """After a push: ``dest``'s repository has these blobs (best effort)."""
    path = _known_path(images)
    known = _load_known(path)
    for d in digests:
        key = f"{dest.registry}@{d}"
        repos = [r for r in known.pop(key, []) if r != dest.repository]
        known[key] = (repos + [dest.repository])[-_MAX_REPOS:]   # re-inserted: newest last
    while len(known) > _MAX_BLOBS:
        del known[next(iter(known))]
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps(known, separators=(",", ":")), mode=0o600)
    except OSError:
        pass  # a cache: the push itself is done


def try_mount(s: Session, repository: str, digest: str, source: str,
              what: str) -> tuple[bool, str | None]:
    """Ask the registry to mount ``digest`` from ``source``: (True, None) when
    it did; (False, location) when it opened an upload session instead;
    (False, None) when it refused (the caller starts an upload of its own).
    A dropped connection, 5xx or 429 is tried again, as any request is,
    before the mount is given up for an upload."""
    scope = f"repository:{repository}:pull,push repository:{source}:pull"
    path = f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}"

    def once() -> tuple[bool, str | None]:
        with s.stream("POST", path, scope, what=what) as r:
            r.read()
            code = r.status_code
            if code == 429 or code >= 500:
                raise Transient(f"{what}: mount answered {code}")
            if code == 201:
                return True, None
            location = r.headers.get("location")
            if code == 202 and location:
                return False, str(r.url.join(location))
            return False, None

    try:
        for attempt in retrying(what):
            with attempt:
                return once()
    except NotDone:
        pass
    return False, None


def mount_or_start(s: Session, repository: str, digest: str, candidates: list[str],
                   what: str) -> tuple[str | None, str | None]:
    """Try each candidate source (at most three): (source mounted from, None),
    or (None, an upload location the registry opened, or None)."""
    location = None
    for source in candidates[:3]:
        done, loc = try_mount(s, repository, digest, source, what)
        if done:
            return source, None
        location = loc or location
    return None, location
