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

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from .errors import BadInput, Conflict, NotDone, NotFound
from .layers import LayerStore, work_dir
from .mediatypes import OCI_LAYER, OCI_MANIFEST
from .store import Store, register_sweeper
from .value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import builtins
    import threading
    from typing import Any

    from . import oci
    from .imageload import BlobReady, Progress

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


class Layer(Value):
    """One layer of an image: its uncompressed digest (``diff_id``, sha256:<hex>
    of the uncompressed tar), its blob's digest as stored (maybe compressed),
    where it is extracted (``path``, the overlay-ready tree) and its bytes of
    file content (``size``)."""

    __slots__ = ("diff_id", "digest", "path", "size", "media_type", "blob_size")

    def __init__(self, diff_id: str, digest: str, path: Path, size: int,
                 media_type: str = OCI_LAYER, blob_size: int = 0) -> None:
        self.diff_id = diff_id
        self.digest = digest
        self.path = path
        self.size = size
        self.media_type = media_type
        self.blob_size = blob_size


class Image(Value):
    """An image of the store: ``id`` (the hex sha256 of its config blob), its
    config and layers (bottom first), and ``repo_digests``
    (["registry/name@sha256:..."])."""

    __slots__ = ("id", "manifest_digest", "tags", "config", "layers", "size", "created",
                 "manifest_media_type", "manifest_size", "loaded_at", "repo_digests")

    def __init__(self, id: str, manifest_digest: str, tags: list[str], config: dict[str, Any],
                 layers: list[Layer], size: int, created: str | None,
                 manifest_media_type: str = OCI_MANIFEST, manifest_size: int = 0,
                 loaded_at: float = 0.0, repo_digests: list[str] | None = None) -> None:
        self.id = id
        self.manifest_digest = manifest_digest
        self.tags = tags
        self.config = config
        self.layers = layers
        self.size = size
        self.created = created
        self.manifest_media_type = manifest_media_type
        self.manifest_size = manifest_size
        self.loaded_at = loaded_at
        self.repo_digests: list[str] = [] if repo_digests is None else repo_digests

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def digest(self) -> str:
        return "sha256:" + self.id

    def lower_dirs(self) -> builtins.list[str]:
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
# Patterns as strings: re compiles (and caches) one when it is first used, and a
# run by a reference as stored (ImageStore._resolve) uses none (~0.6 ms to compile).
_NAME_RE = rf"(?:{_DOMAIN})?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG_RE = r"(?a:[\w][\w.-]{0,127})"
_HEXPFX = r"[0-9a-f]{4,64}"
_HEX64 = r"[0-9a-f]{64}"


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
    if len(name) > 255 or not re.fullmatch(_NAME_RE, name):
        raise BadInput(f"invalid image reference {ref!r}: bad repository name {name!r}")
    if not re.fullmatch(_TAG_RE, tag):
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
    if re.fullmatch(_HEX64, name):
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
            # a reference as stored (as `image ls` shows it) is valid and needs no parsing
            row = db.execute("SELECT image_id FROM tags WHERE name = ?", (ref,)).fetchone()
            if row:
                return row[0], ref
            try:
                name = normalize_ref(ref)
            except BadInput:
                name = None
            if name is not None:
                for cand in (name, f"localhost/{name}", f"docker.io/library/{name}", f"docker.io/{name}"):
                    if cand == ref:
                        continue  # looked up as given above
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
        if re.fullmatch(_HEXPFX, raw):
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

    def list(self) -> builtins.list[Image]:
        ids = [r[0] for r in self.store.db.execute("SELECT id FROM images ORDER BY loaded_at DESC, id")]
        out = []
        for i in ids:
            img = self._load_row(i)
            if img is not None:
                out.append(img)
        return out

    # -- load (runtime/imageload.py: not on the run path) ---------------------------
    def load(self, path: str | os.PathLike[str], tag: str | None = None,
             progress: Progress | None = None) -> Image:
        """Load the image(s) in an OCI layout dir, oci-archive or docker-archive
        and return the first.  ``tag`` names it (only for single-image sources)."""
        return self.load_all(path, tag=tag, progress=progress)[0]

    def load_all(self, path: str | os.PathLike[str], tag: str | None = None,
                 progress: Progress | None = None) -> builtins.list[Image]:
        new_tag = new_name(tag) if tag is not None else None
        from . import oci

        with work_dir(self.store, "load-") as staging:
            staged = oci.read_source(path, staging)
            if new_tag is not None and len(staged) > 1:
                raise BadInput(f"{path} holds {len(staged)} images; --tag needs exactly one")
            return self.load_staged(staged, tag=new_tag, progress=progress)

    def load_staged(self, staged: builtins.list[oci.Staged], tag: str | None = None,
                    progress: Progress | None = None, *, ready: BlobReady | None = None,
                    repo_digest: tuple[str, str] | None = None,
                    cancel: threading.Event | None = None) -> builtins.list[Image]:
        """Commit images whose blobs are staged under the store's ``tmp/``:
        the one way into the store (``load`` and ``pull`` alike), so every
        image gets the same checks.  ``ready(blob)`` is called before each
        layer is extracted and may give a stream of a blob still
        downloading (its ``finish()`` blocks until it is verified);
        ``repo_digest`` = (repository, digest) records where a pulled image
        came from; ``cancel`` is set when a layer fails."""
        from . import imageload

        return imageload.load_staged(self, staged, tag, progress, ready=ready,
                                     repo_digest=repo_digest, cancel=cancel)

    def blob_for_layer(self, digest: str, diff_id: str) -> Path | None:
        """The stored blob ``digest`` if an image already has it as the layer
        ``diff_id`` (so a pull need not download it again), else None."""
        from . import imageload

        return imageload.blob_for_layer(self, digest, diff_id)

    def import_dir(self, src: str | os.PathLike[str], tag: str | None = None,
                   config: dict[str, Any] | None = None) -> Image:
        """Build a one-layer image from a directory (owners, modes and
        symlinks as they are on disk) and load it.  ``config`` is the
        ``config`` section (Cmd, Env, ...).  Handy for tests and fixtures."""
        from . import imageload

        return imageload.import_dir(self, src, tag, config)

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

    def remove(self, ref: str | builtins.list[str], force: bool = False, *,
               only_untagged: bool = False) -> builtins.list[str]:
        """Remove images or tags, Docker style: a tag of an image with other
        tags is only untagged; otherwise the image goes, with its blobs and the
        layers no other image uses.  All refs are checked before anything is
        changed.  Refuses (Conflict, exit 2) an image a container uses — even
        with ``force``, which only allows removing an image by id while it
        still has several tags.  ``only_untagged`` refuses (Conflict) an image
        with any tag, checked in the same transaction as the removal (prune's
        clean-up never takes a name someone just gave).  Returns Docker-like
        "Untagged:"/"Deleted:" lines."""
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
                    if only_untagged and tags:
                        raise Conflict(f"image {image_id[:12]} is tagged {', '.join(sorted(tags))}")
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
            if re.fullmatch(_HEX64, name) and name not in used:
                (d / name).unlink(missing_ok=True)

    def save(self, ref: str, out_path: str | os.PathLike[str]) -> Path:
        """Write the image as an oci-archive that ``podman load`` and skopeo
        accept (``-``: to standard output).  Named by ``ref`` if it is a tag,
        else by all its tags."""
        image_id, by_tag = self._resolve(ref)
        img = self._load_row(image_id)
        if img is None:
            raise NotFound(f"no such image: {ref}")
        from . import oci
        from .outfile import check_target, output

        out = Path("-") if str(out_path) == "-" else check_target(out_path)
        names = [by_tag] if by_tag else img.tags
        blob_dir = self.store.path("blobs", "sha256")
        blobs = [(img.manifest_digest, blob_dir / img.manifest_digest[7:]),
                 (img.digest, blob_dir / img.id)]
        blobs += [(layer.digest, blob_dir / layer.digest[7:]) for layer in img.layers]
        for digest, p in blobs:
            if not p.is_file():
                raise NotFound(f"blob {digest} of image {img.short_id} is missing from the store")
        try:
            with output(out) as f:
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




def _sweep(store: Store) -> None:
    ImageStore(store, sweep=False).sweep()


register_sweeper(COMPONENT, _sweep)
