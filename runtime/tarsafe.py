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

The uncompressed stream is hashed while it is read, so the caller can check
the layer's diff_id without a second pass.  gzip and zstd are recognised by
their magic bytes, whatever the media type claims.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import overlayfmt
from .errors import BadInput
from .fsutil import short

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
    the ``read`` that reaches it."""

    def __init__(self, f: BinaryIO) -> None:
        import queue
        import threading

        self.f = f
        self.h = hashlib.sha256()
        self.q: queue.Queue[bytes | BaseException | None] = queue.Queue(_AHEAD)
        self._full = queue.Full
        self.stop = threading.Event()
        self.buf, self.off, self.ended = b"", 0, False
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

    def read(self, n: int = -1) -> bytes:
        if self.off >= len(self.buf):
            if self.ended:
                return b""
            item = self.q.get()
            if item is None or isinstance(item, BaseException):
                self.ended = True
                if item is not None:
                    raise item
                return b""
            self.buf, self.off = item, 0
        end = len(self.buf) if n is None or n < 0 else self.off + n
        data = self.buf[self.off:end]
        self.off += len(data)
        return data

    def close(self) -> None:
        """Stop the thread (it ends at its next chunk) and wait for it."""
        self.stop.set()
        self.t.join()

    def digest(self) -> str:
        """sha256 of the whole stream: valid once ``read`` returned b""."""
        return "sha256:" + self.h.hexdigest()


class _HashingReader:
    """Reads the decompressed stream (hashed by :class:`_Ahead`); keeps the
    last 64 kB so the end-of-archive block can be checked after tarfile
    stops."""

    _KEEP = 1 << 16

    def __init__(self, f: _Ahead) -> None:
        self.f = f
        self.pos = 0
        self._recent: list[bytes] = []
        self._kept = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n and n > 0 else _CHUNK)
        if data:
            self.pos += len(data)
            self._recent.append(data)
            self._kept += len(data)
            while self._kept - len(self._recent[0]) >= self._KEEP:
                self._kept -= len(self._recent.pop(0))
        return data

    def block_at(self, offset: int, size: int = tarfile.BLOCKSIZE) -> bytes | None:
        """Bytes read at [offset, offset+size) (short at end of data), or None
        when they are no longer held."""
        if offset >= self.pos:
            return b""
        base = self.pos - self._kept
        if offset < base:
            return None
        return b"".join(self._recent)[offset - base : offset - base + size]

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


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
        return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"  # type: ignore[return-value]
    if head == _ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), "zstd"
    return raw, "none"


def _decompress_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
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
            reader = _HashingReader(ahead)
            x = _Extractor(dest, label)
            tf = tarfile.open(fileobj=reader, mode="r|", errorlevel=1)  # type: ignore[call-overload]
            while True:
                m = tf.next()
                if m is None:
                    break
                x.entry(tf, m)
                tf.members.clear()  # stream mode keeps them all otherwise
            _check_end(reader, tf.offset, label)
            reader.drain()
            x.finish()
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


def _check_end(reader: _HashingReader, offset: int, label: str) -> None:
    """tarfile treats a truncated or garbage header after the first entry as
    the end of the archive; we do not: the block where it stopped must be the
    zero end-of-archive block (or a clean end of data, as Go's tar accepts)."""
    block = reader.block_at(offset)
    if block is None or block == b"":
        if block is None:
            raise BadInput(f"{label} is not a valid tar: cannot check its end")
        return
    if len(block) < tarfile.BLOCKSIZE:
        raise BadInput(f"{label} is not a valid tar: truncated at byte {offset}")
    if block.count(0) != len(block):
        raise BadInput(f"{label} is not a valid tar: corrupt header at byte {offset}")


def clean_name(name: str, label: str, what: str = "entry") -> str:
    """The entry's path relative to the layer root, or BadInput."""
    if "\x00" in name:
        raise BadInput(f"{label}: {what} name contains a NUL byte")
    if name.startswith("/"):
        raise BadInput(f"{label}: {what} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"{label}: {what} {name!r} escapes the layer with '..'")
    return "/".join(parts)


_DIR, _FILE, _LINK, _OTHER = "d", "f", "l", "o"


class _Extractor:
    def __init__(self, dest: Path, label: str) -> None:
        self.dest = dest
        self.root = os.fspath(dest)
        self.label = label
        self.kinds: dict[str, str] = {"": _DIR}
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
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

    def _meta(self, path: str, m: tarfile.TarInfo, fd: int | None = None, *, link: bool = False) -> None:
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

    def _xattrs(self, path: str, m: tarfile.TarInfo, link: bool) -> None:
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
    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.entries += 1
        rel = clean_name(m.name, self.label)
        if len(os.fsencode(self._p(rel))) >= _PATH_MAX:  # the extraction works on paths
            raise BadInput(f"{self.label}: entry {short(m.name)} is nested too deep "
                           f"(its path exceeds {_PATH_MAX} bytes)")
        base = rel.rsplit("/", 1)[-1]
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        try:
            marker = overlayfmt.tar_marker(base)
        except ValueError:
            raise BadInput(f"{self.label}: invalid whiteout entry {m.name!r}") from None
        if marker is not None:
            self._parent_ok(rel, m.name)
            self._whiteout(parent, marker, m)
            return
        if rel == "":
            if not m.isdir():
                raise BadInput(f"{self.label}: the layer root {m.name!r} is not a directory")
            os.chown(self.root, m.uid, m.gid)
            self.dirs.append((self.root, m))
            return
        self._parent_ok(rel, m.name)
        old = self.kinds.get(rel)
        if old is not None and not (old == _DIR and m.isdir()):
            self._remove(rel)
        path = self._p(rel)
        if m.isreg():
            self._file(tf, m, path)
            self.kinds[rel] = _FILE
        elif m.isdir():
            if old != _DIR:
                os.mkdir(path, 0o700)
                self.kinds[rel] = _DIR
            os.chown(path, m.uid, m.gid)
            self._xattrs(path, m, False)
            self.dirs.append((path, m))
        elif m.issym():
            os.symlink(m.linkname, path)
            self.kinds[rel] = _LINK
            self._meta(path, m, link=True)
        elif m.islnk():
            self._hardlink(m, rel, path)
        elif m.ischr() or m.isblk():
            if m.ischr() and m.devmajor == 0 and m.devminor == 0:
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
        elif m.isfifo():
            os.mkfifo(path, 0o600)
            self.kinds[rel] = _OTHER
            self._meta(path, m)
        else:
            raise BadInput(f"{self.label}: entry {m.name!r} has unsupported tar type {m.type!r}")

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if m.size:
                src = tf.extractfile(m)
                assert src is not None
                left = m.size
                while left > 0:
                    chunk = src.read(min(_CHUNK, left))
                    if not chunk:
                        raise BadInput(f"{self.label} is not a valid tar: truncated in {m.name!r}")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    left -= len(chunk)
                self.size += m.size
            self._meta(path, m, fd)
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, rel: str, path: str) -> None:
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
        os.link(self._p(target), path, follow_symlinks=False)
        self.kinds[rel] = kind

    def _whiteout(self, parent: str, marker: overlayfmt.TarMarker, m: tarfile.TarInfo) -> None:
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
        for path, m in reversed(self.dirs):
            os.chmod(path, m.mode & 0o7777)
            os.utime(path, (m.mtime, m.mtime))
