"""`volmerge image ...`: load, list, inspect, tag, remove and save images.

Thin commands over :mod:`runtime.images` (architecture.md, principle 5).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from .common import emit_json, human_size, store, table

image_app = typer.Typer(
    help="Load, list, inspect, tag, remove and save images.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _images(ctx: typer.Context):
    from volmerge.runtime.images import ImageStore  # registers the sweeper before the store opens

    return ImageStore(store(ctx))


def _ago(ts: str | None) -> str:
    if not ts:
        return ""
    import datetime as dt
    import re

    try:  # Go writes up to 9 fractional digits; Python takes 6
        t = dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", ts))
    except ValueError:
        return ts
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    secs = (dt.datetime.now(dt.UTC) - t).total_seconds()
    for unit, n in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                    ("hour", 3600), ("minute", 60)):
        if secs >= n:
            k = int(secs // n)
            return f"{k} {unit}{'s' if k > 1 else ''} ago"
    return "Less than a minute ago" if secs >= 0 else ts


def _split(name: str) -> tuple[str, str]:
    repo, tag = name.rsplit(":", 1)
    return repo, tag


class _Bars:
    """A rich progress bar per large layer, only when stderr is a terminal."""

    MIN = 32 << 20

    def __init__(self) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if total < self.MIN:
            return
        if self.progress is None:
            from .common import transfer_progress

            self.progress = transfer_progress(transient=True)
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(f"extracting {label}", total=total)
        self.progress.update(self.tasks[label], completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@image_app.command("load")
def load(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="PATH",
                               help="OCI layout directory, oci-archive or docker-archive tar."),
    tag: str | None = typer.Option(None, "--tag", "-t", metavar="NAME:TAG",
                                      help="Name the loaded image (single-image sources only)."),
) -> None:
    """Load an image from an archive or OCI layout.

    PATH is an OCI image layout directory, an oci-archive or a docker-archive
    (as written by docker save / podman save).  Every blob is verified; layers are extracted once into the shared layer
    store.  Example: volmerge image load busybox.tar --tag busybox:1
    """
    imgs = _images(ctx)
    bars = _Bars() if sys.stderr.isatty() else None
    try:
        loaded = imgs.load_all(path, tag=tag, progress=bars)
    except Exception as exc:
        _no_space_of_load(imgs, path, exc)
        raise
    finally:
        if bars is not None:
            bars.close()
    from volmerge.runtime.images import normalize_ref

    for img in loaded:
        names = [normalize_ref(tag)] if tag else img.tags
        print(f"Loaded image: {', '.join(names) if names else img.digest}")


def _no_space_of_load(imgs: Any, path: str, exc: BaseException) -> None:
    """A full disk during a load: the one line with about what it needed (the
    archive twice: its blobs are kept and its layers extracted)."""
    from volmerge.runtime import diskspace

    root = imgs.store.root
    if isinstance(exc, diskspace.NoSpace) or not diskspace.is_no_space(exc, root):
        return
    try:
        if os.path.isdir(path):
            size = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, files in os.walk(path) for f in files)
        else:
            size = os.path.getsize(path)
    except OSError:
        return
    raise diskspace.no_space(root, needed=2 * size,
                             what=f"load of {os.path.basename(path.rstrip('/'))}") from None


@image_app.command("ls")
def ls(
    ctx: typer.Context,
    json_: bool = typer.Option(False, "--json", help="Print a JSON list."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print image ids."),
    digests: bool = typer.Option(False, "--digests",
                                 help="Add a DIGEST column: the repository digest of a "
                                      "pulled image."),
) -> None:
    """List images.

    One row per tag: repository, tag, image id, created, size (and, with
    --digests, the digest the registry served for a pulled image).
    """
    imgs = _images(ctx).list()
    if json_:
        emit_json([
            {"Id": i.digest, "RepoTags": i.tags, "RepoDigests": i.repo_digests,
             "Created": i.created, "Size": i.size,
             "Layers": len(i.layers), "ManifestDigest": i.manifest_digest}
            for i in imgs
        ])
        return
    if quiet:
        for i in imgs:
            print(i.short_id)
        return
    rows = []
    for i in imgs:
        by_repo = dict(d.split("@", 1) for d in i.repo_digests)
        for name in i.tags or ["<none>:<none>"]:
            repo, tag = _split(name)
            row = [repo, tag, i.short_id, _ago(i.created), human_size(i.size)]
            if digests:
                row.insert(2, by_repo.get(repo, "<none>"))
            rows.append(row)
    columns = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    if digests:
        columns.insert(2, "DIGEST")
    table(columns, rows)


@image_app.command("inspect")
def inspect(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="Image name[:tag] or (short) id."),
    json_: bool = typer.Option(False, "--json", help="Print the full record as JSON."),
) -> None:
    """Show an image's config, layers and sizes."""
    img = _images(ctx).get(ref)
    data = img.to_json()
    if json_:
        emit_json(data)
        return
    cfg = data["Config"]
    print(f"ID:           {img.digest}")
    print(f"Tags:         {', '.join(img.tags) or '<none>'}")
    print(f"Manifest:     {img.manifest_digest}")
    print(f"Created:      {img.created or ''}")
    print(f"Platform:     {data['Os']}/{data['Architecture']}")
    print(f"Size:         {human_size(img.size)}")
    for key in ("Entrypoint", "Cmd", "WorkingDir", "User", "Env", "ExposedPorts", "Volumes",
                "Labels", "Healthcheck", "StopSignal"):
        v = cfg.get(key)
        if v in (None, "", [], {}):
            continue
        if isinstance(v, dict) and key in ("ExposedPorts", "Volumes"):
            v = " ".join(v)
        elif isinstance(v, list) and key == "Env":
            v = "\n              ".join(v)
        elif isinstance(v, dict) and key == "Labels":
            v = "\n              ".join(f"{k}={x}" for k, x in v.items())
        print(f"{key + ':':<14}{v}")
    print(f"Layers:       {len(img.layers)}")
    table(["  #", "DIFF ID", "SIZE", "COMPRESSED", "MEDIA TYPE"], [
        [f"  {n}", layer.diff_id[7:19], human_size(layer.size), human_size(layer.blob_size),
         layer.media_type]
        for n, layer in enumerate(img.layers)
    ])


@image_app.command("tag")
def tag(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="Existing image name[:tag] or id."),
    new: str = typer.Argument(..., metavar="NEW", help="New name[:tag] (default tag: latest)."),
) -> None:
    """Give an image another name.

    If another image had the name NEW, the name moves to this one.
    """
    _images(ctx).tag(ref, new)


@image_app.command("rm")
def rm(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., metavar="REF...", help="Image names or ids."),
    force: bool = typer.Option(False, "--force", "-f",
                               help="Remove an image by id even if it has several tags "
                                    "(never one a container uses)."),
) -> None:
    """Remove images or tags.

    A name whose image has other names only removes that name (Untagged);
    otherwise the image goes (Deleted), with the layers no other image uses.

    Refuses (exit 2) while a container, in any state, uses the image, even
    with --force; all REFs are checked first, so either all are removed or none.
    """
    from volmerge.runtime.containers import register_image_check

    register_image_check()  # the containers' images are in use: refused, whatever their state
    for line in _images(ctx).remove(refs, force=force):
        print(line)


@image_app.command("save")
def save(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="Image name[:tag] or id."),
    output: str = typer.Option(..., "--output", "-o", metavar="FILE",
                               help="Where to write the oci-archive ('-': stdout)."),
) -> None:
    """Save an image as an oci-archive.

    The archive loads in podman load, skopeo and volmerge image load, with
    the same digests.  Example: volmerge image save busybox:1 -o busybox.tar
    """
    import sys

    from volmerge.errors import BadInput

    if output == "-" and sys.stdout.isatty():
        raise BadInput("refusing to write an archive to a terminal; use -o FILE or a pipe")
    _images(ctx).save(ref, output)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
