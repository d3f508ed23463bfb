"""Manifests, image indexes and platforms as a registry serves them.

A tag names an OCI or Docker schema 2 manifest, or an image index / Docker
manifest list from which the manifest of one platform is chosen.  Every
manifest is read with a size bound, hashed, and checked against the digest
it was asked by and the ``Docker-Content-Digest`` the registry sent; its
descriptors are checked before any blob is fetched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .. import oci
from ..errors import BadInput
from .transport import Session, Transient, retrying

MAX_MANIFEST = 4 << 20          # what containerd and distribution accept
MAX_CONFIG = 16 << 20
ACCEPT = ", ".join([oci.OCI_INDEX, oci.DOCKER_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST])
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TYPES = frozenset({
    oci.OCI_LAYER, oci.OCI_LAYER + "+gzip", oci.OCI_LAYER + "+zstd", DOCKER_LAYER,
})
CONFIG_TYPES = frozenset({oci.OCI_CONFIG, "application/vnd.docker.container.image.v1+json"})
_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(value: str | None) -> Platform:
    """``os/arch[/variant]``; None means this host (linux/<arch>)."""
    if value is None:
        return Platform("linux", oci.host_arch())
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(p and p.isascii() and p.replace("-", "").replace(
            "_", "").isalnum() for p in parts):
        raise BadInput(f"invalid platform {value!r}: expected OS/ARCH[/VARIANT]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True)
class Fetched:
    """A manifest or index as served: its bytes, digest and media type."""

    data: bytes
    digest: str
    media_type: str
    doc: dict[str, Any]


def fetch(s: Session, repository: str, ref: str, scope: str, what: str) -> Fetched:
    """GET a manifest or index by tag or digest, bounded and verified."""
    holder: dict[str, Any] = {}
    for attempt in retrying(what):
        with attempt:
            _fetch_once(s, repository, ref, scope, what, holder)
    data: bytes = holder["data"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if ref.startswith("sha256:") and digest != ref:
        raise BadInput(f"digest mismatch for {what}: asked for {ref}, content is {digest}")
    sent = holder.get("header_digest")
    if sent and sent.startswith("sha256:") and sent != digest:
        raise BadInput(f"digest mismatch for {what}: the registry says {sent}, content is {digest}")
    doc = oci.parse_json(data, what)
    if not isinstance(doc, dict):
        raise BadInput(f"{what} is not a JSON object")
    mt = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else holder["content_type"]
    if mt in _SCHEMA1 or doc.get("schemaVersion") == 1:
        raise BadInput(f"{what} is a Docker schema 1 manifest, which is not supported")
    if doc.get("schemaVersion") != 2:
        raise BadInput(f"{what} has schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    if mt not in oci.INDEX_TYPES and mt not in oci.MANIFEST_TYPES:
        # an OCI document may leave mediaType out: tell them apart by shape
        mt = oci.OCI_INDEX if isinstance(doc.get("manifests"), list) else oci.OCI_MANIFEST
    return Fetched(data, digest, mt, doc)


def _fetch_once(s: Session, repository: str, ref: str, scope: str, what: str,
                holder: dict[str, Any]) -> None:
    with s.stream("GET", f"/v2/{repository}/manifests/{ref}", scope,
                  headers={"Accept": ACCEPT}, what=what) as r:
        s.check(r, what)
        length = r.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_MANIFEST:
            raise BadInput(f"{what} is too large ({int(length)} bytes, at most {MAX_MANIFEST})")
        chunks, n = [], 0
        for chunk in r.iter_bytes():
            n += len(chunk)
            if n > MAX_MANIFEST:
                raise BadInput(f"{what} is too large (more than {MAX_MANIFEST} bytes)")
            chunks.append(chunk)
        if length and length.isdigit() and n < int(length):
            raise Transient(f"{what}: body ended at {n} of {length} bytes")
        holder["data"] = b"".join(chunks)
        holder["content_type"] = r.headers.get("content-type", "").split(";")[0].strip()
        holder["header_digest"] = r.headers.get("docker-content-digest")


def choose(index: Fetched, platform: Platform, what: str) -> dict[str, Any]:
    """The descriptor of ``platform``'s manifest in an index."""
    entries = index.doc.get("manifests")
    if not isinstance(entries, list):
        raise BadInput(f"{what} has no manifests list")
    seen = []
    for i, d in enumerate(entries):
        if not isinstance(d, dict):
            raise BadInput(f"{what}: manifests[{i}] is not an object")
        given = d.get("platform")
        p = given if isinstance(given, dict) else {}
        os_, arch, variant = p.get("os"), p.get("architecture"), p.get("variant")
        if os_ == "unknown" or arch == "unknown":
            continue  # attestations and other non-images
        seen.append("/".join(str(x) for x in (os_, arch, variant) if x))
        if os_ == platform.os and arch == platform.architecture and (
                platform.variant is None or variant == platform.variant):
            descriptor(d, f"{what} manifests[{i}]")
            return d
    raise BadInput(f"{what} has no image for {platform} (it has: {', '.join(seen) or 'none'});"
                   " choose one with --platform")


def descriptor(d: object, what: str) -> tuple[str, int]:
    """(digest, size) of a descriptor; BadInput if malformed."""
    if not isinstance(d, dict):
        raise BadInput(f"{what}: descriptor is not an object")
    oci.digest_hex(d.get("digest"), f"{what} digest")
    size = d.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadInput(f"{what}: invalid size {size!r}")
    return d["digest"], size


@dataclass(frozen=True)
class LayerRef:
    digest: str
    size: int
    media_type: str


def check_manifest(m: Fetched, what: str) -> tuple[tuple[str, int], list[LayerRef]]:
    """The config descriptor and the layers of an image manifest."""
    if m.media_type not in oci.MANIFEST_TYPES:
        raise BadInput(f"{what} has unsupported media type {m.media_type!r}")
    cfg = m.doc.get("config")
    config = descriptor(cfg, f"{what} config")
    cmt = cfg.get("mediaType") if isinstance(cfg, dict) else None
    if cmt is not None and cmt not in CONFIG_TYPES:
        raise BadInput(f"{what}: config media type {cmt!r} is not an image config")
    if config[1] > MAX_CONFIG:
        raise BadInput(f"{what}: config of {config[1]} bytes is too large")
    layers = m.doc.get("layers")
    if not isinstance(layers, list):
        raise BadInput(f"{what} has no layers list")
    out = []
    for i, d in enumerate(layers):
        digest, size = descriptor(d, f"{what} layer {i}")
        mt = d.get("mediaType", oci.OCI_LAYER)
        if d.get("urls"):
            raise BadInput(f"{what} layer {i} is a foreign layer (urls), which is not fetched")
        if mt not in LAYER_TYPES:
            raise BadInput(f"{what} layer {i} has unsupported media type {mt!r}")
        out.append(LayerRef(digest, size, mt))
    return config, out


def diff_ids(config: bytes) -> list[str] | None:
    """The config's diff_ids if it has a well-formed list (the store checks the rest)."""
    try:
        doc = json.loads(config)
        ids = doc["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return ids if isinstance(ids, list) and all(isinstance(x, str) for x in ids) else None
