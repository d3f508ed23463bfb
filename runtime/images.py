"""The image store: load, list, look up, tag, remove and save OCI images.

An image is identified, as in Docker and Podman, by the sha256 of its config
blob.  Its verified blobs (manifest, config, compressed layers) are kept in
``blobs/sha256/`` so that ``save`` writes them back bit for bit (same
digests), and its layers are extracted once into the shared layer store
(:mod:`runtime.layers`).  State lives in the ``images`` component's tables of
the store database; layers and blobs are reference-counted through
``image_layers`` and removed with the last image that uses them.

Concurrency: a load stages and verifies everything in ``tmp/`` without any
lock, then holds the locks of its layers while it extracts the missing ones,
and takes the short ``images`` lock to move blobs into place and commit its
rows in one transaction.  Removal commits its rows first (under the same
lock) and then deletes what nothing references any more.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import atomicfile, oci
from .errors import BadInput, Conflict, NotDone, NotFound
from .layers import LayerStore, work_dir
from .store import Store, register_sweeper

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

COMPONENT = "images"
MIGRATIONS = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,                 -- hex sha256 of the config blob
        manifest_digest TEXT NOT NULL,
        manifest_media_type TEXT NOT NULL,
        manifest_size INTEGER NOT NULL,
        config TEXT NOT NULL,                -- the config JSON, as loaded
        size INTEGER NOT NULL,               -- uncompressed bytes of all layers
        created TEXT,
        loaded_at REAL NOT NULL
    );
    CREATE TABLE layers (
        diff_id TEXT PRIMARY KEY,            -- sha256:<hex> of the uncompressed tar
        size INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,           -- 0 = bottom-most
        diff_id TEXT NOT NULL REFERENCES layers(diff_id),
        digest TEXT NOT NULL,                -- the (compressed) blob
        media_type TEXT NOT NULL,
        blob_size INTEGER NOT NULL,
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_diff ON image_layers(diff_id);
    CREATE INDEX image_layers_digest ON image_layers(digest);
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,               -- repository:tag
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        tagged_at REAL NOT NULL
    );
    CREATE INDEX tags_image ON tags(image_id);
    """,
    # v2: where a pulled image came from (`volmerge pull`): the repository and
    # the digest its tag resolved to there (an index's digest for a
    # multi-platform image), as `docker images --digests` shows.
    """
    CREATE TABLE repo_digests (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        repository TEXT NOT NULL,            -- registry/name, no tag
        digest TEXT NOT NULL,                -- sha256:<hex> the registry served
        pulled_at REAL NOT NULL,
        PRIMARY KEY (image_id, repository)
    );
    """,
]

UserCheck = Callable[[Store, str], "list[str]"]
_USER_CHECKS: list[UserCheck] = []


def register_user_check(fn: UserCheck) -> None:
    """``fn(store, image_id) -> [container names]``: ``image rm`` refuses
    (exit 2) while any registered check reports a user; --force does not
    override this."""
    if fn not in _USER_CHECKS:
        _USER_CHECKS.append(fn)


Progress = Callable[[str, int, int], None]   # (label, bytes done, bytes total)
# Called before a staged layer blob is extracted: returns None once the blob is
# in place and verified, or a stream of it still downloading (a pull extracts
# while it downloads).
BlobReady = Callable[["oci.Blob"], "Streaming | None"]


class Streaming:
    """A layer blob being downloaded: ``reader`` gives its bytes as they
    arrive; ``finish()`` blocks until the whole blob is verified (or raises)."""

    reader: Any
    def finish(self) -> None: ...  # pragma: no cover - interface


@dataclass
class Layer:
    """One layer of an image: its uncompressed digest and where it is extracted."""

    diff_id: str          # sha256:<hex> of the uncompressed tar
    digest: str           # sha256:<hex> of the blob as stored (maybe compressed)
    path: Path            # the extracted, overlay-ready tree
    size: int             # bytes of file content in the layer
    media_type: str = oci.OCI_LAYER
    blob_size: int = 0


@dataclass
class Image:
    """An image of the store: its config and layers, bottom first."""

    id: str               # hex sha256 of the config blob
    manifest_digest: str
    tags: list[str]
    config: dict[str, Any]
    layers: list[Layer]   # bottom-most first
    size: int
    created: str | None
    manifest_media_type: str = oci.OCI_MANIFEST
    manifest_size: int = 0
    loaded_at: float = 0.0
    repo_digests: list[str] = field(default_factory=list)   # ["registry/name@sha256:..."]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def digest(self) -> str:
        return "sha256:" + self.id

    def lower_dirs(self) -> list[str]:
        """Extracted layer dirs, TOP-MOST FIRST, for runtime.sys.mount_overlay."""
        return [str(layer.path) for layer in reversed(self.layers)]

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "Id": self.digest,
            "RepoTags": list(self.tags),
            "ManifestDigest": self.manifest_digest,
            "ManifestMediaType": self.manifest_media_type,
            "RepoDigests": list(self.repo_digests),
            "Created": self.created,
            "Architecture": cfg.get("architecture"),
            "Os": cfg.get("os"),
            "Author": cfg.get("author"),
            "Size": self.size,
            "Config": cfg.get("config") or {},
            "RootFS": cfg.get("rootfs") or {},
            "Layers": [
                {
                    "DiffID": layer.diff_id,
                    "Digest": layer.digest,
                    "MediaType": layer.media_type,
                    "Size": layer.size,
                    "CompressedSize": layer.blob_size,
                    "Path": str(layer.path),
                }
                for layer in self.layers
            ],
            "History": cfg.get("history") or [],
        }


# -- references -----------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_NAME_RE = re.compile(rf"^(?:{_DOMAIN})?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HEXPFX = re.compile(r"^[0-9a-f]{4,64}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); BadInput if it is not a valid reference."""
    if not ref or ref != ref.strip():
        raise BadInput(f"invalid image reference {ref!r}")
    if "@" in ref:
        raise BadInput(f"invalid image reference {ref!r}: digest references are not supported here")
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    if len(name) > 255 or not _NAME_RE.fullmatch(name):
        raise BadInput(f"invalid image reference {ref!r}: bad repository name {name!r}")
    if not _TAG_RE.fullmatch(tag):
        raise BadInput(f"invalid image reference {ref!r}: bad tag {tag!r}")
    return name, tag


def normalize_ref(ref: str) -> str:
    name, tag = parse_ref(ref)
    return f"{name}:{tag}"


_DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")


def new_name(ref: str) -> str:
    """``normalize_ref`` for a name about to be given to an image: refuses
    (as Docker does) names that would read as a digest or an image id, such
    as ``sha256:abcd`` or 64 hex digits, which lookups resolve otherwise."""
    name, tag = parse_ref(ref)
    if name in _DIGEST_ALGORITHMS:
        raise BadInput(f"refusing to create an ambiguous tag {ref!r} using a digest algorithm "
                       "as the name")
    if _HEX64.fullmatch(name):
        raise BadInput(f"invalid image name {ref!r}: 64 hex digits read as an image id")
    return f"{name}:{tag}"


# -- the store ---------------------------------------------------------------------

class ImageStore:
    def __init__(self, store: Store, *, sweep: bool = True) -> None:
        self.store = store
        store.ensure_schema(COMPONENT, MIGRATIONS)
        self.layers = LayerStore(store)
        if sweep:
            self.sweep()

    # -- lookup ---------------------------------------------------------------
    def get(self, ref: str) -> Image:
        """By ``name:tag``, ``name`` (= ``:latest``), full or short (>= 4 hex)
        id, or ``sha256:<id>``.  NotFound (exit 2) if nothing matches."""
        image_id = self._resolve(ref)[0]
        img = self._load_row(image_id)
        if img is None:  # removed between the two queries
            raise NotFound(f"no such image: {ref}")
        return img

    def _resolve(self, ref: str) -> tuple[str, str | None]:
        """(image id, the tag it was found by or None)."""
        db = self.store.db
        if not isinstance(ref, str) or not ref.strip():
            raise BadInput("an image reference cannot be empty")
        ref = ref.strip()
        raw = ref[7:] if ref.startswith("sha256:") else ref
        if not ref.startswith("sha256:"):
            try:
                name = normalize_ref(ref)
            except BadInput:
                name = None
            if name is not None:
                for cand in (name, f"localhost/{name}", f"docker.io/library/{name}", f"docker.io/{name}"):
                    row = db.execute("SELECT image_id FROM tags WHERE name = ?", (cand,)).fetchone()
                    if row:
                        return row[0], cand
                rows = db.execute(
                    "SELECT name, image_id FROM tags WHERE name LIKE ? ESCAPE '\\'",
                    ("%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"),),
                ).fetchall()
                if len(rows) == 1:
                    return rows[0][1], rows[0][0]
                if len(rows) > 1:
                    raise BadInput(
                        f"image reference {ref!r} is ambiguous: "
                        + ", ".join(sorted(r[0] for r in rows))
                    )
        if _HEXPFX.fullmatch(raw):
            rows = db.execute(
                "SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2",
                (raw, raw + "g"),
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0], None
            if len(rows) > 1:
                raise BadInput(f"image id prefix {raw!r} is ambiguous; give more digits")
        elif ref.startswith("sha256:"):
            raise BadInput(f"invalid image id {ref!r}")
        raise NotFound(f"no such image: {ref}")

    def _load_row(self, image_id: str) -> Image | None:
        db = self.store.db
        row = db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            return None
        tags = [r[0] for r in db.execute(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY tagged_at, name", (image_id,)
        )]
        layers = [
            Layer(
                diff_id=r["diff_id"], digest=r["digest"], path=self.layers.path(r["diff_id"]),
                size=int(r["size"]), media_type=r["media_type"], blob_size=int(r["blob_size"]),
            )
            for r in db.execute(
                "SELECT il.diff_id, il.digest, il.media_type, il.blob_size, l.size"
                " FROM image_layers il JOIN layers l ON l.diff_id = il.diff_id"
                " WHERE il.image_id = ? ORDER BY il.position",
                (image_id,),
            )
        ]
        repo_digests = [f"{r[0]}@{r[1]}" for r in db.execute(
            "SELECT repository, digest FROM repo_digests WHERE image_id = ?"
            " ORDER BY pulled_at, repository", (image_id,)
        )]
        return Image(
            id=row["id"], manifest_digest=row["manifest_digest"], tags=tags,
            repo_digests=repo_digests,
            config=json.loads(row["config"]), layers=layers, size=int(row["size"]),
            created=row["created"], manifest_media_type=row["manifest_media_type"],
            manifest_size=int(row["manifest_size"]), loaded_at=float(row["loaded_at"]),
        )

    def list(self) -> list[Image]:
        ids = [r[0] for r in self.store.db.execute("SELECT id FROM images ORDER BY loaded_at DESC, id")]
        out = []
        for i in ids:
            img = self._load_row(i)
            if img is not None:
                out.append(img)
        return out

    # -- load --------------------------------------------------------------------
    def load(self, path: str | os.PathLike[str], tag: str | None = None,
             progress: Progress | None = None) -> Image:
        """Load the image(s) in an OCI layout dir, oci-archive or docker-archive
        and return the first.  ``tag`` names it (only for single-image sources)."""
        return self.load_all(path, tag=tag, progress=progress)[0]

    def load_all(self, path: str | os.PathLike[str], tag: str | None = None,
                 progress: Progress | None = None) -> list[Image]:
        new_tag = new_name(tag) if tag is not None else None
        with work_dir(self.store, "load-") as staging:
            staged = oci.read_source(path, staging)
            if new_tag is not None and len(staged) > 1:
                raise BadInput(f"{path} holds {len(staged)} images; --tag needs exactly one")
            return self.load_staged(staged, tag=new_tag, progress=progress)

    def load_staged(self, staged: list[oci.Staged], tag: str | None = None,
                    progress: Progress | None = None, *, ready: BlobReady | None = None,
                    repo_digest: tuple[str, str] | None = None) -> list[Image]:
        """Commit images whose blobs are staged under the store's ``tmp/``:
        the one way into the store (``load`` and ``pull`` alike), so every
        image gets the same checks.  ``ready(blob)`` is called before each
        layer is extracted and may block until that blob is in place and
        verified; ``repo_digest`` = (repository, digest) records where a
        pulled image came from."""
        new_tag = new_name(tag) if tag is not None else None
        plans = [self._plan(s) for s in staged]
        all_layers = {d for p in plans for d, _b in p.layers}
        extracted: list[str] = []
        try:
            with self.layers.locked(all_layers):
                n = sum(len(p.layers) for p in plans)
                k = 0
                for p in plans:
                    for diff_id, blob in p.layers:
                        k += 1
                        label = f"layer {k}/{n} ({blob.digest[7:19]})"
                        cb = None if progress is None else functools.partial(progress, label)
                        src = None
                        if ready is not None and not self.layers.present(diff_id):
                            src = ready(blob)
                        if self.layers.ensure(diff_id, blob.path if src is None else src.reader,
                                              label=label, progress=cb, size=blob.size,
                                              verified=None if src is None else src.finish):
                            extracted.append(diff_id)
                if ready is not None:  # every blob, even of a layer that was present
                    for p in plans:
                        for _d, blob in p.layers:
                            src = ready(blob)
                            if src is not None:
                                src.finish()
                with self.store.lock("images"):
                    self._commit(plans, new_tag, repo_digest)
        except BaseException:
            # nothing partial: layers this load extracted for an image that
            # never got committed go again (unless someone else uses them now)
            self.layers.remove_unused(extracted)
            raise
        out = [self._load_row(p.staged.config.digest[7:]) for p in plans]
        return [img for img in out if img is not None]

    def blob_for_layer(self, digest: str, diff_id: str) -> Path | None:
        """The stored blob ``digest`` if an image already has it as the layer
        ``diff_id`` (so a pull need not download it again), else None."""
        row = self.store.db.execute(
            "SELECT 1 FROM image_layers WHERE digest = ? AND diff_id = ? LIMIT 1",
            (digest, diff_id),
        ).fetchone()
        if row is None:
            return None
        p = self.store.path("blobs", "sha256", oci.digest_hex(digest))
        return p if p.is_file() and self.layers.present(diff_id) else None

    def _plan(self, s: oci.Staged) -> _Plan:
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
        return _Plan(s, cfg, list(zip(diff_ids, s.layers)), names, created)

    def _commit(self, plans: list[_Plan], new_tag: str | None,
                repo_digest: tuple[str, str] | None = None) -> None:
        """Under the ``images`` lock: blobs into place, then one transaction."""
        blobs_dir = self.store.path("blobs", "sha256")
        for p in plans:
            for b in [p.staged.manifest, p.staged.config] + [b for _d, b in p.layers]:
                final = blobs_dir / b.digest[7:]
                if not final.exists() and b.path.exists():
                    os.rename(b.path, final)
        atomicfile.fsync_dir(blobs_dir)
        now = time.time()
        with self.store.transaction() as db:
            for i, p in enumerate(plans):
                image_id = p.staged.config.digest[7:]
                exists = db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
                if not exists:
                    size = sum(self.layers.size(d) for d, _b in p.layers)
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

    def import_dir(self, src: str | os.PathLike[str], tag: str | None = None,
                   config: dict[str, Any] | None = None) -> Image:
        """Build a one-layer image from a directory (owners, modes and
        symlinks as they are on disk) and load it.  ``config`` is the
        ``config`` section (Cmd, Env, ...).  Handy for tests and fixtures."""
        src = Path(src)
        if not src.is_dir():
            raise BadInput(f"{src} is not a directory")
        with work_dir(self.store, "import-") as work:
            layer = work / "layer.tar"
            import tarfile

            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
                for entry in sorted(os.listdir(src)):
                    tf.add(src / entry, arcname=entry, recursive=True)
            diff_id = _file_digest(layer)
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
            return self.load(layout, tag=tag)

    # -- tag / remove / save --------------------------------------------------------
    def tag(self, ref: str, new_ref: str) -> str:
        """Point ``new_ref`` at the image ``ref`` names; returns the full new name."""
        name = new_name(new_ref)
        with self.store.transaction() as db:
            image_id = self._resolve(ref)[0]
            db.execute(
                "INSERT INTO tags(name, image_id, tagged_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id,"
                " tagged_at = excluded.tagged_at",
                (name, image_id, time.time()),
            )
        return name

    def remove(self, ref: str | list[str], force: bool = False) -> list[str]:
        """Remove images or tags, Docker style: a tag of an image with other
        tags is only untagged; otherwise the image goes, with its blobs and the
        layers no other image uses.  All refs are checked before anything is
        changed.  Refuses (Conflict, exit 2) an image a container uses — even
        with ``force``, which only allows removing an image by id while it
        still has several tags.  Returns Docker-like "Untagged:"/"Deleted:"
        lines."""
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs:
            raise BadInput("no image given")
        report: list[str] = []
        candidates: set[str] = set()
        with self.store.lock("images"):
            with self.store.transaction() as db:
                untag: list[str] = []
                delete: list[str] = []
                for r in refs:
                    image_id, by_tag = self._resolve(r)
                    tags = [t[0] for t in db.execute("SELECT name FROM tags WHERE image_id = ?", (image_id,))]
                    if by_tag is not None and len([t for t in tags if t not in untag]) > 1:
                        if by_tag not in untag:
                            untag.append(by_tag)
                        continue
                    if by_tag is None and len(tags) > 1 and not force:
                        raise Conflict(
                            f"image {image_id[:12]} is tagged {', '.join(sorted(tags))}; "
                            "remove it by name or use --force"
                        )
                    users = [u for fn in _USER_CHECKS for u in fn(self.store, image_id)]
                    if users:
                        raise Conflict(
                            f"image {image_id[:12]} is used by container(s) {', '.join(sorted(set(users)))}"
                        )
                    if image_id not in delete:
                        delete.append(image_id)
                for name in untag:
                    db.execute("DELETE FROM tags WHERE name = ?", (name,))
                    report.append(f"Untagged: {name}")
                for image_id in delete:
                    for (t,) in db.execute("SELECT name FROM tags WHERE image_id = ? ORDER BY name", (image_id,)):
                        report.append(f"Untagged: {t}")
                    candidates |= {r[0] for r in db.execute(
                        "SELECT diff_id FROM image_layers WHERE image_id = ?", (image_id,))}
                    db.execute("DELETE FROM images WHERE id = ?", (image_id,))
                    report.append(f"Deleted: sha256:{image_id}")
            if candidates or any(line.startswith("Deleted") for line in report):
                self._remove_unused_blobs()
        self.layers.remove_unused(candidates)
        return report

    def _referenced_blobs(self) -> set[str]:
        db = self.store.db
        used = {r[0][7:] for r in db.execute("SELECT manifest_digest FROM images")}
        used |= {r[0] for r in db.execute("SELECT id FROM images")}
        used |= {r[0][7:] for r in db.execute("SELECT DISTINCT digest FROM image_layers")}
        return used

    def _remove_unused_blobs(self) -> None:
        """Caller holds the ``images`` lock."""
        used = self._referenced_blobs()
        d = self.store.path("blobs", "sha256")
        for name in os.listdir(d):
            if _HEX64.fullmatch(name) and name not in used:
                (d / name).unlink(missing_ok=True)

    def save(self, ref: str, out_path: str | os.PathLike[str]) -> Path:
        """Write the image as an oci-archive that ``podman load`` and skopeo
        accept.  Named by ``ref`` if it is a tag, else by all its tags."""
        image_id, by_tag = self._resolve(ref)
        img = self._load_row(image_id)
        if img is None:
            raise NotFound(f"no such image: {ref}")
        from .outfile import atomic_output, check_target

        out = check_target(out_path)
        names = [by_tag] if by_tag else img.tags
        blob_dir = self.store.path("blobs", "sha256")
        blobs = [(img.manifest_digest, blob_dir / img.manifest_digest[7:]),
                 (img.digest, blob_dir / img.id)]
        blobs += [(layer.digest, blob_dir / layer.digest[7:]) for layer in img.layers]
        for digest, p in blobs:
            if not p.is_file():
                raise NotFound(f"blob {digest} of image {img.short_id} is missing from the store")
        try:
            with atomic_output(out) as fd, os.fdopen(fd, "wb", closefd=False) as f:
                oci.write_oci_archive(f, img.manifest_digest, img.manifest_media_type,
                                      img.manifest_size, blobs, names)
        except FileNotFoundError as exc:  # the image was removed while we read it
            raise NotFound(f"image {ref} went away while it was being saved ({exc.filename})") from None
        except OSError as exc:
            raise NotDone(f"cannot write {out}: {exc.strerror or exc}") from None
        return out

    # -- crash sweeping ---------------------------------------------------------------
    def sweep(self) -> None:
        self.layers.sweep()
        try:
            with self.store.lock("images", blocking=False):
                self._remove_unused_blobs()
        except BlockingIOError:
            pass


@dataclass
class _Plan:
    """What an image load will commit: the staged archive and its layers."""

    staged: oci.Staged
    config: dict[str, Any]
    layers: list[tuple[str, oci.Blob]]   # (diff_id, blob), bottom-most first
    names: list[str] = field(default_factory=list)
    created: str | None = None


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _sweep(store: Store) -> None:
    ImageStore(store, sweep=False).sweep()


register_sweeper(COMPONENT, _sweep)
