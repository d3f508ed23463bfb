"""OCI image formats: read an image source, write an oci-archive.

Sources are an OCI image layout directory, an oci-archive (the same layout in
a tar) and a docker-archive (``docker save`` / ``podman save``:
``manifest.json`` + config + layer tars).  Every source is turned into the
same thing: a list of :class:`Staged` images whose blobs have been copied into
a staging directory *and verified* (sha256 against the digest that names
them, size against the descriptor).  Nothing in a source is ever used as a
path to write to: archive member names are only lookup keys and blob file
names are derived from validated digests.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput, NotFound
from .mediatypes import DOCKER_LIST as DOCKER_LIST
from .mediatypes import DOCKER_MANIFEST as DOCKER_MANIFEST
from .mediatypes import INDEX_TYPES as INDEX_TYPES
from .mediatypes import MANIFEST_TYPES as MANIFEST_TYPES
from .mediatypes import OCI_CONFIG as OCI_CONFIG
from .mediatypes import OCI_INDEX as OCI_INDEX
from .mediatypes import OCI_LAYER as OCI_LAYER
from .mediatypes import OCI_MANIFEST as OCI_MANIFEST

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import tarfile
    from typing import IO, Any, BinaryIO

# hashlib and tarfile are imported inside the functions that use them: a
# container start (`volmerge run`) reads images but never parses archives.

REF_NAME = "org.opencontainers.image.ref.name"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MAX_JSON = 16 << 20


def host_arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def digest_hex(digest: object, what: str = "digest") -> str:
    """The hex of a ``sha256:<64 hex>`` digest; anything else is bad input."""
    if not isinstance(digest, str):
        raise BadInput(f"invalid {what} {digest!r}")
    m = _DIGEST.fullmatch(digest)
    if not m:
        if isinstance(digest, str) and ":" in digest and not digest.startswith("sha256:"):
            raise BadInput(f"unsupported digest algorithm in {digest!r} (only sha256)")
        raise BadInput(f"invalid {what} {digest!r}")
    return m.group(1)


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def media_type_for(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return OCI_LAYER + "+gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return OCI_LAYER + "+zstd"
    return OCI_LAYER


@dataclass
class Blob:
    """A verified blob of the store (content-addressed)."""

    digest: str          # sha256:<hex>, verified
    size: int
    path: Path           # staged copy
    media_type: str = ""


@dataclass
class Staged:
    """One image read from a source, every blob staged and verified."""

    manifest: Blob
    manifest_bytes: bytes
    config: Blob
    config_bytes: bytes
    layers: list[Blob]
    names: list[str] = field(default_factory=list)   # ref names found in the source

    @property
    def manifest_media_type(self) -> str:
        return self.manifest.media_type or OCI_MANIFEST


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} is not valid JSON: {str(exc).splitlines()[0]}") from None


# -- staging ----------------------------------------------------------------------

class _Stager:
    """Copies blobs into ``staging/<hex>`` while hashing them."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.done: dict[str, Blob] = {}

    def put(self, src: IO[bytes], expected: str | None, size: int | None, what: str) -> Blob:
        import hashlib
        import tarfile

        if expected is not None and expected in self.done:
            return self.done[expected]
        tmp = self.staging / f"incoming-{len(self.done)}-{os.getpid()}"
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as out:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise BadInput(f"{what} cannot be read: {exc}") from None
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = "sha256:" + h.hexdigest()
        if expected is not None and got != expected:
            tmp.unlink()
            raise BadInput(f"digest mismatch for {what}: expected {expected}, content is {got}")
        if size is not None and size != n:
            tmp.unlink()
            raise BadInput(f"size mismatch for {what}: descriptor says {size} bytes, blob has {n}")
        final = self.staging / got.split(":", 1)[1]
        os.replace(tmp, final)
        blob = Blob(got, n, final)
        self.done[got] = blob
        return blob


class _Source:
    """Random access to the files of a layout directory or archive."""

    def open(self, name: str) -> IO[bytes] | None:  # pragma: no cover - interface
        raise NotImplementedError

    def read_small(self, name: str, what: str) -> bytes | None:
        import tarfile

        f = self.open(name)
        if f is None:
            return None
        with f:
            try:
                data = f.read(_MAX_JSON + 1)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BadInput(f"{what} cannot be read: {exc}") from None
        if len(data) > _MAX_JSON:
            raise BadInput(f"{what} is too large")
        return data

    def close(self) -> None:
        pass


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, name: str) -> IO[bytes] | None:
        # names are fixed ("index.json") or built from validated digests
        p = self.root / name
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            return None
        return os.fdopen(fd, "rb")


class _TarSource(_Source):
    def __init__(self, path: Path) -> None:
        import tarfile

        try:
            self.tf = tarfile.open(path, "r:*")
            members = self.tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"{path} is not a readable tar archive: {exc}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in members:
            key = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            self.members[key] = m  # a later entry wins, as in extraction

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        for _hop in range(16):
            m = self.members.get(name)
            if m is None:
                return None
            if m.isreg():
                return m
            if m.issym() or m.islnk():
                target = m.linkname
                if m.issym() and not target.startswith("/"):
                    target = os.path.join(os.path.dirname(name), target)
                parts: list[str] = []
                for p in target.split("/"):
                    if p in ("", "."):
                        continue
                    if p == "..":
                        if parts:
                            parts.pop()
                        continue
                    parts.append(p)
                name = "/".join(parts)
                continue
            return None
        return None

    def open(self, name: str) -> IO[bytes] | None:
        import tarfile

        m = self._resolve(name)
        if m is None:
            return None
        try:
            return self.tf.extractfile(m)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"archive member {name} cannot be read: {exc}") from None

    def close(self) -> None:
        self.tf.close()


def _open_source(path: Path) -> _Source:
    if not os.path.lexists(path):
        raise NotFound(f"no such file or directory: {path}")
    if path.is_dir():
        return _DirSource(path)
    if not path.is_file():
        raise BadInput(f"{path} is neither a directory nor a file")
    return _TarSource(path)


def read_source(path: str | os.PathLike[str], staging: Path) -> list[Staged]:
    """Read every image in an OCI layout dir, oci-archive or docker-archive,
    staging and verifying its blobs in ``staging``."""
    path = Path(path)
    src = _open_source(path)
    try:
        stager = _Stager(staging)
        if src.read_small("index.json", "index.json") is not None:
            return _read_oci(src, stager, path)
        manifest = src.read_small("manifest.json", "manifest.json")
        if manifest is not None:
            return _read_docker(src, stager, manifest, path)
        raise BadInput(
            f"{path} is not an image: no index.json (OCI layout / oci-archive) "
            "or manifest.json (docker-archive)"
        )
    finally:
        src.close()


# -- OCI layout ----------------------------------------------------------------------

def _blob(src: _Source, stager: _Stager, desc: Any, what: str) -> Blob:
    if not isinstance(desc, dict):
        raise BadInput(f"{what}: descriptor is not an object")
    digest = desc.get("digest")
    hx = digest_hex(digest, f"{what} digest")
    size = desc.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise BadInput(f"{what}: invalid size {size!r}")
    f = src.open(f"blobs/sha256/{hx}")
    if f is None:
        raise BadInput(f"{what} names the missing blob {digest}")
    with f:
        blob = stager.put(f, digest, size, f"{what} {digest}")
    mt = desc.get("mediaType")
    return Blob(blob.digest, blob.size, blob.path, mt if isinstance(mt, str) else "")


def _read_oci(src: _Source, stager: _Stager, path: Path) -> list[Staged]:
    layout = src.read_small("oci-layout", "oci-layout")
    if layout is not None:
        version = parse_json(layout, "oci-layout")
        if not isinstance(version, dict) or not str(version.get("imageLayoutVersion", "")).startswith("1."):
            raise BadInput(f"{path}: unsupported oci-layout {layout[:80]!r}")
    index = parse_json(src.read_small("index.json", "index.json") or b"", "index.json")
    out: list[Staged] = []
    for desc, names in _walk_index(src, stager, index, "index.json", 0):
        out.append(_read_manifest(src, stager, desc, names))
    if not out:
        raise BadInput(f"{path}: index.json lists no image for {'linux/' + host_arch()}")
    return out


def _walk_index(src: _Source, stager: _Stager, index: Any, what: str,
                depth: int) -> Iterator[tuple[dict[str, Any], list[str]]]:
    if depth > 4:
        raise BadInput("image index nesting is too deep")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise BadInput(f"{what} has no manifests list")
    for i, desc in enumerate(index["manifests"]):
        if not isinstance(desc, dict):
            raise BadInput(f"{what}: manifests[{i}] is not an object")
        mt = desc.get("mediaType", OCI_MANIFEST)
        ann = desc.get("annotations") or {}
        name = ann.get(REF_NAME) if isinstance(ann, dict) else None
        names = [name] if isinstance(name, str) and name else []
        if mt in INDEX_TYPES:
            child = _blob(src, stager, desc, f"{what} manifests[{i}]")
            sub = parse_json(child.path.read_bytes(), f"image index {child.digest}")
            found = [
                (d, n) for d, n in _walk_index(src, stager, sub, f"image index {child.digest}", depth + 1)
                if _platform_ok(d)
            ]
            for d, n in found[:1]:  # the first manifest for this host
                yield d, names + n
        elif mt in MANIFEST_TYPES:
            if depth == 0 or _platform_ok(desc):
                yield desc, names
        else:
            raise BadInput(f"{what}: manifests[{i}] has unsupported media type {mt!r}")


def _platform_ok(desc: dict[str, Any]) -> bool:
    p = desc.get("platform")
    if not isinstance(p, dict):
        return True
    return p.get("os", "linux") == "linux" and p.get("architecture", host_arch()) == host_arch()


def _read_manifest(src: _Source, stager: _Stager, desc: dict[str, Any], names: list[str]) -> Staged:
    mblob = _blob(src, stager, desc, "index")
    mbytes = mblob.path.read_bytes()
    manifest = parse_json(mbytes, f"manifest {mblob.digest}")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise BadInput(f"manifest {mblob.digest} has no layers list")
    mt = manifest.get("mediaType") or mblob.media_type or OCI_MANIFEST
    mblob.media_type = mt
    cblob = _blob(src, stager, manifest.get("config"), f"manifest {mblob.digest} config")
    layers = [
        _blob(src, stager, d, f"manifest {mblob.digest} layer {i}")
        for i, d in enumerate(manifest["layers"])
    ]
    return Staged(mblob, mbytes, cblob, cblob.path.read_bytes(), layers, names)


# -- docker-archive ------------------------------------------------------------------

def _read_docker(src: _Source, stager: _Stager, raw: bytes, path: Path) -> list[Staged]:
    entries = parse_json(raw, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{path}: manifest.json lists no image")
    out = []
    for i, e in enumerate(entries):
        what = f"manifest.json[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("Config"), str) or not isinstance(e.get("Layers"), list):
            raise BadInput(f"{what} needs Config and Layers")
        cblob = _named(src, stager, e["Config"], f"{what} config")
        cbytes = cblob.path.read_bytes()
        layers = []
        for j, name in enumerate(e["Layers"]):
            if not isinstance(name, str):
                raise BadInput(f"{what} layer {j} is not a file name")
            b = _named(src, stager, name, f"{what} layer {j}")
            with open(b.path, "rb") as f:
                b.media_type = media_type_for(f.read(4))
            layers.append(b)
        cblob.media_type = OCI_CONFIG
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cblob.digest, "size": cblob.size},
            "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in layers],
        }
        mbytes = canonical_json(manifest)
        mblob = stager.put(io.BytesIO(mbytes), None, None, "generated manifest")
        mblob = Blob(mblob.digest, mblob.size, mblob.path, OCI_MANIFEST)
        tags = [t for t in (e.get("RepoTags") or []) if isinstance(t, str)]
        out.append(Staged(mblob, mbytes, cblob, cbytes, layers, tags))
    return out


def _named(src: _Source, stager: _Stager, name: str, what: str) -> Blob:
    """A docker-archive member; when its name carries a sha256 (``<hex>.json``,
    ``blobs/sha256/<hex>``) the content must match it."""
    key = "/".join(p for p in name.split("/") if p not in ("", "."))
    f = src.open(key)
    if f is None:
        raise BadInput(f"{what} names the missing file {name!r}")
    stem = key.rsplit("/", 1)[-1]
    for suffix in (".json",):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    expected = None
    if _HEX64.fullmatch(stem) and (key.endswith(".json") or key.startswith("blobs/sha256/")):
        expected = "sha256:" + stem
    with f:
        return stager.put(f, expected, None, f"{what} ({name})")


# -- writing an oci-archive ------------------------------------------------------------

def write_oci_archive(out: Path | BinaryIO, manifest_digest: str, manifest_media_type: str,
                      manifest_size: int, blobs: list[tuple[str, Path]], names: list[str]) -> None:
    """Write an oci-archive (OCI layout in a tar) to the path or open file
    ``out``: ``oci-layout``, ``index.json`` (one entry per name, annotated with
    ``org.opencontainers.image.ref.name``), ``blobs/sha256/*``."""
    import tarfile

    entries = []
    tagged: list[str | None] = list(names) or [None]
    for name in tagged:
        d: dict[str, Any] = {
            "mediaType": manifest_media_type,
            "digest": manifest_digest,
            "size": manifest_size,
        }
        if name:
            d["annotations"] = {REF_NAME: name}
        entries.append(d)
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    where = {"name": out} if isinstance(out, (str, os.PathLike)) else {"fileobj": out}
    with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, **where) as tf:
        def add_bytes(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", index)
        dirinfo = tarfile.TarInfo("blobs")
        dirinfo.type = tarfile.DIRTYPE
        dirinfo.mode = 0o755
        tf.addfile(dirinfo)
        dirinfo.name = "blobs/sha256"
        tf.addfile(dirinfo)
        seen = set()
        for digest, p in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            ti = tarfile.TarInfo("blobs/sha256/" + digest_hex(digest))
            ti.size = os.path.getsize(p)
            ti.mode = 0o644
            with open(p, "rb") as f:
                tf.addfile(ti, f)
