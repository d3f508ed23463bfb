"""Blob transfers: downloads that resume, uploads, existence checks.

A download writes ``<hex>.part`` beside its final name while hashing; when
the connection drops it asks for the rest with a ``Range`` request (starting
over if the registry ignores the range), retried with back-off.  It never
reads past the descriptor's size, and the file is renamed to its final name
only when size and sha256 match: a caller never sees an unverified blob.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import BadInput, NotDone
from .transport import Session, Transient, retrying

_CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

Report = Callable[[str, str, int, int], None]   # (digest, status, bytes done, total)


class Cancelled(NotDone):
    """Another transfer of the same operation failed: this one stopped."""


class Download:
    """One blob into ``dest`` (verified), resumable across retries."""

    def __init__(self, s: Session, repository: str, scope: str, digest: str, size: int,
                 dest: Path, report: Report, cancel: threading.Event) -> None:
        self.s, self.repository, self.scope = s, repository, scope
        self.digest, self.size, self.dest = digest, size, dest
        self.report, self.cancel = report, cancel
        self.what = f"blob {digest[:19]}"
        self.part = dest.with_name(dest.name + ".part")
        self.h = hashlib.sha256()
        self.got = 0
        # followers (extraction while downloading) wait on this for bytes
        self.cond = threading.Condition()
        self.opened = False
        self.ended = False

    def run(self) -> Path:
        try:
            # a .part already there: what an earlier pull kept (partial.py)
            kept = self.part.exists()
            with open(self.part, "r+b" if kept else "wb") as self.f:
                resumed = kept and self._prefill()
                with self.cond:
                    self.opened = True
                    self.cond.notify_all()
                for attempt in retrying(self.what) if self.got < self.size else ():
                    with attempt:
                        self._once()
                if resumed and "sha256:" + self.h.hexdigest() != self.digest:
                    self._restart()   # the kept prefix was bad: once more, whole
                    for attempt in retrying(self.what):
                        with attempt:
                            self._once()
                # no fsync here: the image store syncs the file system once
                # before its commit (imageload._make_durable)
                self.f.flush()
            got = "sha256:" + self.h.hexdigest()
            if got != self.digest:
                self.part.unlink()
                raise BadInput(f"digest mismatch for {self.what}: expected {self.digest}, "
                               f"content is {got}")
            with self.cond:
                os.rename(self.part, self.dest)
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()
        self.report(self.digest, "downloaded", self.size, self.size)
        return self.dest

    def _prefill(self) -> bool:
        """Hash the bytes a kept partial download has; True when there are some."""
        while self.got < self.size and (chunk := self.f.read(min(_CHUNK, self.size - self.got))):
            self.h.update(chunk)
            self.got += len(chunk)
        self.f.seek(self.got)
        self.f.truncate()
        return self.got > 0

    def _restart(self) -> None:
        with self.cond:
            self.f.seek(0)
            self.f.truncate()
            self.h = hashlib.sha256()
            self.got = 0

    def _once(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self.got:
            headers["Range"] = f"bytes={self.got}-"
        with self.s.stream("GET", f"/v2/{self.repository}/blobs/{self.digest}", self.scope,
                           headers=headers, what=self.what, bulk=True) as r:
            if r.status_code == 416 and self.got:
                raise BadInput(f"{self.what} is truncated: the registry has {self.got} of "
                               f"{self.size} bytes")
            self.s.check(r, self.what)
            if self.got and r.status_code == 206:
                m = _RANGE.match(r.headers.get("content-range", ""))
                if not m or int(m.group(1)) != self.got:
                    self._restart()  # a range we did not ask for: start over, whole
                    raise Transient(f"{self.what}: unexpected Content-Range")
            elif self.got:
                self._restart()      # the registry ignored the Range: a whole body follows
            length = r.headers.get("content-length")
            if length and length.isdigit() and self.got + int(length) > self.size:
                raise BadInput(f"{self.what} is larger than its descriptor says ({self.size} bytes)")
            for chunk in r.iter_raw():   # as it arrives: a follower extracts it at once
                if self.cancel.is_set():
                    raise Cancelled(f"{self.what}: cancelled")
                if self.got + len(chunk) > self.size:
                    raise BadInput(f"{self.what} is larger than its descriptor says "
                                   f"({self.size} bytes)")
                with self.cond:
                    self.f.write(chunk)
                    self.f.flush()
                    self.h.update(chunk)
                    self.got += len(chunk)
                    self.cond.notify_all()
                self.report(self.digest, "downloading", self.got, self.size)
        if self.got < self.size:
            raise Transient(f"{self.what}: the body ended at {self.got} of {self.size} bytes")


class Follower(io.RawIOBase):
    """Reads a blob while its Download writes it (same offsets, the same
    bytes even if the download starts over).  Its end is the download's end;
    a failed download fails the reader.  ``finish()`` waits for the download
    and raises its error: the caller's check that the blob is verified."""

    def __init__(self, dl: Download, done: Callable[[], object]) -> None:
        super().__init__()
        self.dl, self.done = dl, done
        self.pos = 0
        self.fd: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        dl = self.dl
        want = len(b)
        with dl.cond:
            while True:
                if dl.cancel.is_set():
                    raise Cancelled(f"{dl.what}: cancelled")
                if dl.opened and (dl.got - self.pos >= min(want, 4, dl.size - self.pos)
                                  or dl.ended):
                    break
                dl.cond.wait(0.5)
            if dl.ended and dl.got < dl.size:
                self.done()           # raises the download's error
            if self.fd is None:
                self.fd = self._open()
            n = min(want, dl.got - self.pos)
            data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _open(self) -> int:
        """The file being written, or its final name once renamed (under the
        download's lock, so it cannot move between the two tries)."""
        for path in (self.dl.part, self.dl.dest):
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
        while not self.dl.ended:  # the download ends under this lock: released meanwhile
            self.dl.cond.wait(0.5)
        self.done()   # gone: the download failed (its error), or
        raise NotDone(f"{self.dl.what}: the downloaded file went away")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        super().close()

    def finish(self) -> None:
        self.done()
        self.close()

    @property
    def reader(self) -> io.BufferedReader:
        return io.BufferedReader(self, buffer_size=_CHUNK)


def fetch_small(s: Session, repository: str, scope: str, digest: str, size: int,
                limit: int, what: str) -> bytes:
    """A blob read into memory (a config), size-bounded and verified."""
    if size > limit:
        raise BadInput(f"{what} is too large ({size} bytes)")
    holder: dict[str, bytes] = {}

    def once() -> None:
        with s.stream("GET", f"/v2/{repository}/blobs/{digest}", scope,
                      headers={"Accept-Encoding": "identity"}, what=what) as r:
            s.check(r, what)
            buf = bytearray()
            for chunk in r.iter_raw(_CHUNK):
                buf += chunk
                if len(buf) > size:
                    raise BadInput(f"{what} is larger than its descriptor says ({size} bytes)")
            if len(buf) < size:
                raise Transient(f"{what}: the body ended at {len(buf)} of {size} bytes")
            holder["data"] = bytes(buf)

    for attempt in retrying(what):
        with attempt:
            once()
    data = holder["data"]
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise BadInput(f"digest mismatch for {what}: expected {digest}, content is {got}")
    return data


def exists(s: Session, repository: str, scope: str, digest: str, what: str) -> bool:
    """HEAD the blob: is it in the repository already?"""
    def once() -> bool:
        with s.stream("HEAD", f"/v2/{repository}/blobs/{digest}", scope, what=what) as r:
            if r.status_code == 404:
                return False
            s.check(r, what)
            return True

    for attempt in retrying(what):
        with attempt:
            return once()
    raise AssertionError("unreachable")  # pragma: no cover


def upload(s: Session, repository: str, scope: str, digest: str, path: Path,
           report: Report, cancel: threading.Event, location: str | None = None) -> None:
    """POST an upload session, PUT the whole blob with its digest (monolithic).
    ``location``: a session the registry opened already (a refused mount's
    ``202``), used by the first attempt."""
    what = f"blob {digest[:19]}"
    size = os.path.getsize(path)

    def body() -> Iterator[bytes]:
        done = 0
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                if cancel.is_set():
                    raise Cancelled(f"{what}: cancelled")
                done += len(chunk)
                report(digest, "uploading", done, size)
                yield chunk

    opened = [location]

    def once() -> None:
        url = opened.pop() if opened and opened[0] else None
        if url is None:
            with s.stream("POST", f"/v2/{repository}/blobs/uploads/", scope, what=what) as r:
                s.check(r, what)
                loc = r.headers.get("location")
            if not loc:
                raise BadInput(f"{what}: the registry gave no upload location")
            url = str(r.url.join(loc))
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with s.stream("PUT", url, scope, headers=headers, content=body, what=what) as r:
            s.check(r, what)

    for attempt in retrying(what):
        with attempt:
            once()
    report(digest, "pushed", size, size)
