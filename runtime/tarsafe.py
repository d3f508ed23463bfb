"""Safe, overlay-ready extraction of one image layer.

Why not ``tarfile.extractall``: the stdlib ``data`` filter refuses device
nodes, so it cannot produce overlayfs whiteouts, and the other filters trust
the archive.  Here every entry is checked against what *this* extraction has
created so far (an in-memory map of the layer), so nothing can land outside
the layer directory: absolute names and ``..`` are refused, an entry whose
parent is a symlink (or any non-directory) is refused, and a hardlink must
name a non-directory that an earlier entry of the same layer created.

OCI whiteouts become overlayfs ones as they are met: ``.wh.NAME`` -> a 0:0
character device ``NAME``; ``.wh..wh..opq`` -> ``trusted.overlay.opaque=y`` on
the directory.  Modes, owners, mtimes, xattrs, hardlinks and symlinks are
preserved; ``trusted.overlay.*`` xattrs from the archive are dropped (they
would steer the overlay mount).

The archive is read by :mod:`runtime.tarstream` (faster than ``tarfile``'s
reader; a regular file's data goes to ``os.write`` straight from the
decompressed chunks).  The uncompressed stream is hashed while it is read,
so the caller can check the layer's diff_id without a second pass.  gzip and zstd are recognised by
their magic bytes, whatever the media type claims.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import overlayfmt
from .errors import BadInput
from .fsutil import short
from .tarstream import BLK, CHR, DIR, FIFO, LNK, REGULAR, SYM, Member, TarFormatError, TarStream
from .tarwrite import CREATE, Writers

_CHUNK = 1 << 20
_AHEAD = 8          # decompressed chunks read ahead of the tar parser
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_PATH_MAX = os.pathconf("/", "PC_PATH_MAX")

Progress = Callable[[int, int], None]  # (compressed bytes done, total)


@dataclass
class Extracted:
    diff_id: str        # "sha256:<hex>" of the uncompressed tar stream
    size: int           # bytes of regular file content
    entries: int        # tar entries processed
    compression: str    # "none" | "gzip" | "zstd"
    devices_skipped: int = 0  # device files left out (never created on the host)


class _Ahead:
    """The decompressed stream, read (and hashed) by a thread of its own
    ahead of the tar parser, as ``tar -xz`` runs gzip in a process of its
    own: decompression and sha256 run without the GIL, so they overlap the
    extraction's system calls.  At most ``_AHEAD`` chunks wait; an error of
    the stream (corrupt or truncated data, a failed download) is raised by
    the ``chunk()`` call that reaches it."""

    def __init__(self, f: BinaryIO) -> None:
        import queue
        import threading

        self.f = f
        self.h = hashlib.sha256()
        self.q: queue.Queue[bytes | BaseException | None] = queue.Queue(_AHEAD)
        self._full = queue.Full
        self.stop = threading.Event()
        self.ended = False
        self.t = threading.Thread(target=self._run, name="tarsafe-read", daemon=True)
        self.t.start()

    def _run(self) -> None:
        # read1: what is there (a download still arriving gives what it has
        # so far: the extraction keeps up with it), never waiting for a full chunk
        read = getattr(self.f, "read1", self.f.read)
        try:
            while not self.stop.is_set():
                data = read(_CHUNK)
                if not data:
                    self._put(None)
                    return
                self.h.update(data)
                self._put(data)
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except self._full:
                continue

    def chunk(self) -> bytes:
        """The next chunk of the stream, b"" at its end."""
        if self.ended:
            return b""
        item = self.q.get()
        if item is None or isinstance(item, BaseException):
            self.ended = True
            if item is not None:
                raise item
            return b""
        return item

    def close(self) -> None:
        """Stop the thread (it ends at its next chunk) and wait for it."""
        self.stop.set()
        self.t.join()

    def digest(self) -> str:
        """sha256 of the whole stream: valid once ``read`` returned b""."""
        return "sha256:" + self.h.hexdigest()


class _ProgressReader:
    def __init__(self, f: Any, total: int, cb: Progress) -> None:  # a buffered reader
        self.f, self.total, self.cb, self.done, self._last = f, total, cb, 0, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self._count(data)
        return data

    def _count(self, data: bytes) -> None:
        self.done += len(data)
        if self.done - self._last >= _CHUNK * 4 or not data:
            self._last = self.done
            self.cb(self.done, self.total)

    def read1(self, n: int = -1) -> bytes:
        data = self.f.read1(n)
        self._count(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _decompressor(head: bytes, raw: BinaryIO) -> tuple[BinaryIO, str]:
    """Wrap ``raw`` in the decompressor its first bytes (``head``) call for."""
    if head.startswith(_GZIP_MAGIC):
        try:   # ISA-L inflates about 3x as fast as zlib, also without the GIL
            from isal import igzip
        except ImportError:  # pragma: no cover - a declared dependency
            return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"  # type: ignore[return-value]
        return igzip.GzipFile(fileobj=raw, mode="rb"), "gzip"  # type: ignore[return-value]
    if head == _ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), "zstd"
    return raw, "none"


def _decompress_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from isal import igzip_lib

        errs.append(igzip_lib.IsalError)  # type: ignore[arg-type]  # (its stub: an instance)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def extract_layer(blob: str | os.PathLike[str] | io.BufferedReader, dest: str | os.PathLike[str],
                  *, label: str = "layer", progress: Progress | None = None,
                  size: int | None = None) -> Extracted:
    """Extract the layer blob at ``blob`` into the existing empty dir ``dest``.
    ``blob`` may also be an open buffered stream of ``size`` bytes (a pull
    extracts a layer while it downloads).

    Raises BadInput for anything hostile or corrupt; ``dest`` is then left
    half-filled and the caller throws it away (it lives in the store's tmp/).
    """
    dest = Path(dest)
    opened: contextlib.AbstractContextManager[io.BufferedReader]
    if isinstance(blob, io.BufferedReader):
        total, opened = size or 0, contextlib.nullcontext(blob)
    else:
        total, opened = os.path.getsize(blob), open(blob, "rb")
    with opened as raw:
        head = raw.peek(4)[:4]
        src: BinaryIO = raw
        if progress is not None:
            src = _ProgressReader(raw, total, progress)  # type: ignore[assignment]
        ahead = None
        try:
            stream, comp = _decompressor(head, src)
            ahead = _Ahead(stream)
            ts = TarStream(ahead.chunk)
            x = _Extractor(dest, label, ts)
            with x.writers:
                while (m := ts.next()) is not None:
                    x.entry(m)
                x.writers.barrier()
            ts.drain()
            x.finish()
        except TarFormatError as exc:
            raise BadInput(f"{label} is not a valid tar: {exc}") from None
        except BadInput:
            raise
        except _decompress_errors() as exc:
            raise BadInput(f"{label} is not a valid (compressed) tar: {_why(exc)}") from None
        finally:
            if ahead is not None:
                ahead.close()
    return Extracted(diff_id=ahead.digest(), size=x.size,
                     entries=x.entries, compression=comp,
                     devices_skipped=len(x.devices_skipped))


def _why(exc: BaseException) -> str:
    msg = (str(exc) or type(exc).__name__).splitlines()[0]
    if "unexpected end of data" in msg or isinstance(exc, EOFError):
        return f"truncated ({msg})"
    return msg


def clean_name(name: str, label: str, what: str = "entry") -> str:
    """The entry's path relative to the layer root, or BadInput."""
    if "\x00" in name:
        raise BadInput(f"{label}: {what} name contains a NUL byte")
    if name.startswith("/"):
        raise BadInput(f"{label}: {what} {name!r} has an absolute path")
    parts = name.split("/")
    if "" not in parts and "." not in parts and ".." not in parts:
        return name
    parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"{label}: {what} {name!r} escapes the layer with '..'")
    return "/".join(parts)


_DIR, _FILE, _LINK, _OTHER = "d", "f", "l", "o"
_MAX_ID = 0xFFFFFFFE   # uid_t; 2**32-1 means "unchanged" to chown
_MAX_TIME = 1 << 62    # seconds; utimensat refuses more
_SMALL = 256 << 10    # files up to this size go to the writer threads


class _Extractor:
    def __init__(self, dest: Path, label: str, ts: TarStream) -> None:
        self.dest = dest
        self.ts = ts
        self.writers = Writers(self._file_xattrs)
        self.root = os.fspath(dest)
        self.label = label
        self.kinds: dict[str, str] = {"": _DIR}
        self.dirs: list[tuple[str, Member]] = []
        self.size = 0
        self.entries = 0
        self.devices_skipped: list[str] = []

    # -- helpers ---------------------------------------------------------------
    def _p(self, rel: str) -> str:
        return self.root + "/" + rel if rel else self.root

    def _parent_ok(self, rel: str, name: str) -> None:
        """Every ancestor of ``rel`` must be a directory this layer made;
        missing ones are created (tars often omit directories)."""
        if "/" not in rel:
            return
        parts = rel.split("/")[:-1]
        prefix = ""
        for part in parts:
            prefix = f"{prefix}/{part}" if prefix else part
            kind = self.kinds.get(prefix)
            if kind == _DIR:
                continue
            if kind is None:
                os.mkdir(self._p(prefix), 0o755)
                self.kinds[prefix] = _DIR
                continue
            if kind == _LINK:
                raise BadInput(f"{self.label}: entry {name!r} goes through the symlink {prefix!r}")
            raise BadInput(f"{self.label}: entry {name!r} has the non-directory {prefix!r} as parent")

    def _remove(self, rel: str) -> None:
        kind = self.kinds.pop(rel, None)
        if kind is None:
            return
        self.writers.barrier()   # nothing queued may be under what goes
        path = self._p(rel)
        if kind == _DIR:
            from .fsutil import rmtree

            rmtree(path)
            pre = rel + "/"
            for k in [k for k in self.kinds if k.startswith(pre)]:
                del self.kinds[k]
            self.dirs = [(p, m) for p, m in self.dirs if not (p == path or p.startswith(path + "/"))]
        else:
            os.unlink(path)

    def _meta(self, path: str, m: Member, fd: int | None = None, *, link: bool = False) -> None:
        if fd is not None:
            os.fchown(fd, m.uid, m.gid)
        else:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
        self._xattrs(path, m, link)
        if not link:
            if fd is not None:
                os.fchmod(fd, m.mode & 0o7777)
            else:
                os.chmod(path, m.mode & 0o7777)
        t = m.mtime
        if fd is not None:
            os.utime(fd, (t, t))
        else:
            os.utime(path, (t, t), follow_symlinks=False)

    def _xattrs(self, path: str, m: Member, link: bool) -> None:
        if not m.pax_headers:
            return
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if overlayfmt.is_overlay_xattr(name):
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(path, name, raw, follow_symlinks=False)
            except OSError as exc:
                if exc.errno == errno.ENOTSUP or (link and exc.errno == errno.EPERM):
                    continue  # e.g. user.* on a symlink: the kernel never allows it
                raise BadInput(
                    f"{self.label}: cannot set xattr {name!r} on {m.name!r}: {exc.strerror}"
                ) from None

    # -- one entry ---------------------------------------------------------------
    def entry(self, m: Member) -> None:
        self.entries += 1
        rel = clean_name(m.name, self.label)
        if not (0 <= m.uid <= _MAX_ID and 0 <= m.gid <= _MAX_ID and -_MAX_TIME < m.mtime < _MAX_TIME):
            raise BadInput(f"{self.label}: entry {short(m.name)} has an owner or mtime out of range")
        path = self.root + "/" + rel if rel else self.root
        if len(path) >= _PATH_MAX // 4 and len(os.fsencode(path)) >= _PATH_MAX:
            # the extraction works on paths
            raise BadInput(f"{self.label}: entry {short(m.name)} is nested too deep "
                           f"(its path exceeds {_PATH_MAX} bytes)")
        parent, _sep, base = rel.rpartition("/")
        if base.startswith(".wh."):
            try:
                marker = overlayfmt.tar_marker(base)
            except ValueError:
                raise BadInput(f"{self.label}: invalid whiteout entry {m.name!r}") from None
            if marker is not None:
                self._parent_ok(rel, m.name)
                self._whiteout(parent, marker, m)
                return
        typ = m.type
        if rel == "":
            if typ != DIR:
                raise BadInput(f"{self.label}: the layer root {m.name!r} is not a directory")
            os.chown(self.root, m.uid, m.gid)
            self.dirs.append((self.root, m))
            return
        if parent and self.kinds.get(parent) != _DIR:
            self._parent_ok(rel, m.name)
        old = self.kinds.get(rel)
        if old is not None and not (old == _DIR and typ == DIR):
            self._remove(rel)
        if typ in REGULAR:
            self._file(m, path)
            self.kinds[rel] = _FILE
        elif typ == DIR:
            if old != _DIR:
                os.mkdir(path, 0o700)
                self.kinds[rel] = _DIR
            os.chown(path, m.uid, m.gid)
            self._xattrs(path, m, False)
            self.dirs.append((path, m))
        elif typ == SYM:
            os.symlink(m.linkname, path)
            self.kinds[rel] = _LINK
            self._meta(path, m, link=True)
        elif typ == LNK:
            self._hardlink(m, rel, path)
        elif typ == CHR or typ == BLK:
            if typ == CHR and m.devmajor == 0 and m.devminor == 0:
                overlayfmt.make_whiteout(path, mode=0o600)
                self.kinds[rel] = _OTHER
                self._meta(path, m)
            else:
                # Root file systems made by debootstrap or mmdebstrap carry
                # /dev/null, /dev/console...; the OCI format allows them and
                # runtimes give a container its own /dev. A device file from
                # a layer would open the host's device: it is left out (the
                # name stays free, as if the entry were not there), counted.
                self.devices_skipped.append(rel)
        elif typ == FIFO:
            os.mkfifo(path, 0o600)
            self.kinds[rel] = _OTHER
            self._meta(path, m)
        else:
            raise BadInput(f"{self.label}: entry {m.name!r} has unsupported tar type {typ!r}")

    def _file_xattrs(self, path: str, m: Member) -> None:
        self._xattrs(path, m, False)

    def _file(self, m: Member, path: str) -> None:
        if m.size <= _SMALL:   # written by a thread of self.writers
            data = self.ts.view(m.size) if m.size else b""
            if data is not None:
                self.size += m.size
                self.writers.add((path, data, m.uid, m.gid, m.mode & 0o7777, m.mtime,
                                  m if m.pax_headers else None))
                return
        fd = os.open(path, CREATE, 0o600)
        try:
            if m.size:
                self.ts.copy_to(fd, m.size)
                self.size += m.size
            os.fchown(fd, m.uid, m.gid)
            if m.pax_headers:
                self._xattrs(path, m, False)
            os.fchmod(fd, m.mode & 0o7777)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, m: Member, rel: str, path: str) -> None:
        if m.linkname.startswith("/"):
            raise BadInput(f"{self.label}: hardlink {m.name!r} points outside the layer ({m.linkname!r})")
        target = clean_name(m.linkname, self.label, "hardlink target")
        kind = self.kinds.get(target)
        if kind is None:
            raise BadInput(
                f"{self.label}: hardlink {m.name!r} points to {m.linkname!r}, "
                "which is not an earlier entry of the layer"
            )
        if kind == _DIR:
            raise BadInput(f"{self.label}: hardlink {m.name!r} points to the directory {m.linkname!r}")
        self.writers.barrier()   # the target may be queued
        os.link(self._p(target), path, follow_symlinks=False)
        self.kinds[rel] = kind

    def _whiteout(self, parent: str, marker: overlayfmt.TarMarker, m: Member) -> None:
        if marker.kind == "opaque":
            overlayfmt.set_opaque(self._p(parent))
            return
        if marker.kind != "whiteout":
            return  # other AUFS metadata (.wh..wh.plnk etc.): meaningless here
        rel = f"{parent}/{marker.target}" if parent else str(marker.target)
        self._remove(rel)
        path = self._p(rel)
        overlayfmt.make_whiteout(path, mode=0o600)
        os.chown(path, m.uid, m.gid)
        self.kinds[rel] = _OTHER

    def finish(self) -> None:
        """Directory modes and mtimes last: adding children changes them."""
        self.writers.barrier()
        for path, m in reversed(self.dirs):
            os.chmod(path, m.mode & 0o7777)
            os.utime(path, (m.mtime, m.mtime))
