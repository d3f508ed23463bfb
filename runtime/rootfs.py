"""The container's root: an overlay of the image's layers and a container layer.

``containers/<id>/upper`` and ``work`` hold the container layer; it survives
stop/start and goes with ``rm``.  The overlay is mounted at
``containers/<id>/bundle/rootfs`` while the container runs.  Mounting uses the
new mount API (``lowerdir+=``, one layer per call, see runtime.sys), so the
4096-byte option page is no limit; the kernel's own limit is 500 lower layers
here (501 fails with EINVAL).  Images with more layers get their bottom layers
squashed once into ``containers/<id>/squashed`` (a copy through a read-only
overlay, so whiteouts are applied) and the container mounts at most 500.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from . import fsutil, incomplete
from . import sys as rsys
from .errors import BadInput, NotFound
from .value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any


def max_lowers() -> int:
    return rsys.overlay_max_lowers()


class RootfsImage(Value):
    """A plain root file system directory used as a one-layer image (like
    ``podman run --rootfs``); its config is read from ``<dir>.json`` when
    that file exists (an OCI image config)."""

    __slots__ = ("path", "config")

    def __init__(self, path: Path, config: dict[str, Any] | None = None) -> None:
        self.path = path
        self.config: dict[str, Any] = {} if config is None else config

    @property
    def id(self) -> str:
        return "rootfs:" + str(self.path)

    def lower_dirs(self) -> list[str]:
        return [str(self.path)]


def load_image(store: Any, ref: str) -> Any:
    """An image by reference: an absolute directory path is a RootfsImage;
    anything else comes from the image store."""
    if ref.startswith("/"):
        p = Path(ref)
        if not p.is_dir():
            raise NotFound(f"image {ref}: no such directory")
        cfg_path = p.with_name(p.name + ".json")
        cfg: dict[str, Any] = {}
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except ValueError as exc:
                raise BadInput(f"image config {cfg_path}: {exc}") from None
        return RootfsImage(p, cfg)
    try:
        from . import images
    except ImportError:
        raise NotFound(f"image {ref} not found (no image store installed)") from None
    return images.ImageStore(store, sweep=False).get(ref)


def layout(cdir: Path) -> tuple[Path, Path, Path]:
    """(upper, work, rootfs mount point) of a container directory."""
    return cdir / "upper", cdir / "work", cdir / "bundle" / "rootfs"


def mount_rootfs(cdir: Path, lowers: list[str], *, volatile: bool = False) -> Path:
    """Mount the container's root (idempotent) and return the mount point.

    ``volatile`` (for ``--rm`` containers, whose layer is thrown away) skips
    overlay's sync of the upper file system: unmounting then takes ~1 ms
    instead of 35-200 ms here."""
    upper, work, target = layout(cdir)
    for d in (upper, work, target):
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            # the overlay's root shows the upper's mode: 0755 as docker's, not
            # whatever the caller's umask left (0777, or 0700 for a -u 1000 process)
            os.chmod(d, 0o755 if d == upper else 0o700)
    if rsys.is_mountpoint(target):
        return target
    if not lowers:
        raise BadInput("image has no layers")
    lowers = _fit_lowers(cdir, lowers)
    rsys.mount_overlay(target, lowers, str(upper), str(work),
                       extra={"volatile": None} if volatile else None)
    return target


def umount_rootfs(cdir: Path) -> None:
    """Unmount the root and everything below it (bind mounts of a crashed run).

    A ``volatile`` overlay leaves ``work/work/incompat/volatile`` behind,
    and overlay refuses to mount the same upper and work again while it is
    there: a sign that a crash may have lost the upper's unsynced writes.
    Unmounted here, cleanly, it is removed, so that a ``--rm`` container
    can be started again (``restart``, a ``stop`` by an upgrade); one found
    unmounted (after a reboot) keeps it."""
    _upper, work, target = layout(cdir)
    unmounted = rsys.umount_tree(target)
    marker = work / "work" / "incompat" / "volatile"
    if os.path.realpath(target) in unmounted and marker.is_dir():
        try:
            fsutil.rmtree(marker)
        except OSError as exc:  # the teardown goes on; the next mount says why
            from . import diag

            diag.ignored(__name__, "removing the volatile overlay's marker", exc)


def discard_files(store: Any, cid: str) -> None:
    """Container ``cid``'s directory (its layer, bundle, logs) and its lock
    file, once no record names it and its root is unmounted (``rm`` tore
    the run down; the sweeper of directories a crash left without a record,
    runtime.records, unmounts first): after ``rm``, a root still mounted
    makes the first try fail, and it is unmounted then."""
    cdir = store.path("containers", cid)
    try:
        fsutil.rmtree(cdir)
    except OSError:
        umount_rootfs(cdir)
        fsutil.rmtree(cdir)
    # its lock file too (unlinked while held; the id is never reused),
    # or every removed container leaves one (found by bench/soak.py)
    with contextlib.suppress(FileNotFoundError):
        store.path("locks", f"container-{cid}.lock").unlink()


def _fit_lowers(cdir: Path, lowers: list[str]) -> list[str]:
    limit = max_lowers()
    if len(lowers) <= limit:
        return lowers
    squashed = cdir / "squashed"
    keep = lowers[: limit - 1]
    if not squashed.is_dir():
        squash(lowers[limit - 1:], squashed, tmp_parent=cdir)
    return keep + [str(squashed)]


def squash(lowers: list[str], dest: Path, *, tmp_parent: Path) -> None:
    """Merge ``lowers`` (top-most first) into one directory ``dest``."""
    limit = max_lowers()
    while len(lowers) > limit:  # squash from the bottom up, 500 at a time
        part = tmp_parent / f"squash-part-{len(lowers)}"
        squash(lowers[-limit:], part, tmp_parent=tmp_parent)
        lowers = lowers[:-limit] + [str(part)]
    view = tmp_parent / "squash-view"
    incomplete.sweep(dest.parent, prefix=dest.name)  # what a crashed squash left
    view.mkdir(exist_ok=True)
    with incomplete.building(dest.parent, dest.name) as tmp:
        rsys.mount_overlay(view, lowers, readonly=True)
        try:
            import subprocess

            subprocess.run(["cp", "-a", "--", f"{view}/.", str(tmp)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            rsys.umount(view, rsys.MNT_DETACH)
            os.rmdir(view)
        os.rename(tmp, dest)
    for low in lowers:  # intermediate parts are ours to drop
        if Path(low).parent == tmp_parent and Path(low).name.startswith("squash-part-"):
            fsutil.rmtree(low)
