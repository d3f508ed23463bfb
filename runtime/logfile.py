"""A detached container's log (``containers/<id>/log``): both ends of its format.

One JSON object a line: ``{"t": unix time, "s": "stdout" | "stderr", "d":
text}``.  The supervisor writes it (:class:`LogWriter`, fed by :func:`pump`
from the container's pipes), ``volmerge logs`` reads it (:func:`read`).
A line of output is one record; a line longer than :data:`MAX_PIECE` bytes
is cut into records of at least that size, each cut on a UTF-8 character
boundary so that no character is lost to the cut.  A reader skips what it
cannot decode (a record cut by a crash), so the file is only ever appended.

Imported lazily (by a detached supervisor and by ``logs``): not on the
path of a foreground ``run``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

#: a partial line longer than this is written without waiting for its end
MAX_PIECE = 16384
STREAMS = ("stdout", "stderr")

Entry = tuple[str, str, float]  # (stream, text, unix time)


def encode(stream: str, data: bytes, t: float) -> bytes:
    """One record, newline included."""
    rec = json.dumps({"t": round(t, 6), "s": stream, "d": data.decode("utf-8", errors="replace")})
    return rec.encode() + b"\n"


def decode(line: bytes) -> Entry | None:
    """The entry of one record (without its newline); None for a damaged one."""
    try:
        rec = json.loads(line)
        return (str(rec.get("s", "stdout")), str(rec.get("d", "")), float(rec.get("t") or 0))
    except (ValueError, TypeError, AttributeError):
        return None


def _char_boundary(b: bytes) -> int:
    """Where to cut ``b`` so that it does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(b)) + 1):
        byte = b[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back
            continue
        need = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else \
            4 if 0xF0 <= byte < 0xF8 else 1
        return len(b) - back if need > back else len(b)
    return len(b)


class Framer:
    """One stream's bytes into the pieces that become records: every line
    (its newline kept), and a line that grows past :data:`MAX_PIECE` in
    pieces cut on a character boundary."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self.partial = (self.partial + data).split(b"\n")
        out = [line + b"\n" for line in lines]
        if len(self.partial) > MAX_PIECE:
            cut = _char_boundary(self.partial) or len(self.partial)
            out.append(self.partial[:cut])
            self.partial = self.partial[cut:]
        return out

    def flush(self) -> list[bytes]:
        """What is left at the end of the stream (a last line without newline)."""
        rest, self.partial = self.partial, b""
        return [rest] if rest else []


class LogWriter:
    """The supervisor's end: appends records to the log file."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                      0o600)

    def write(self, stream: str, data: bytes) -> None:
        if self.fd is not None:
            os.write(self.fd, encode(stream, data, time.time()))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pump(pipes: tuple[int, int], log: LogWriter, running: Any) -> None:
    """Copy the container's stdout/stderr (``pipes``) into the log until both
    close, or a second after the container is gone (a stray holder of a pipe
    must not keep the supervisor forever)."""
    import selectors

    sel = selectors.DefaultSelector()
    names = dict(zip(pipes, STREAMS, strict=True))
    framers = {fd: Framer() for fd in pipes}
    for fd in pipes:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(pipes)
    exited_at = None
    while open_fds:
        events = sel.select(timeout=0.5)
        for key, _ in events:
            fd = key.fd
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not data:
                sel.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
                pieces = framers[fd].flush()
            else:
                pieces = framers[fd].feed(data)
            for piece in pieces:
                log.write(names[fd], piece)
        if not events and running.poll() is not None:
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 1.0:
                break
    for fd in open_fds:
        for piece in framers[fd].flush():
            log.write(names[fd], piece)
        sel.unregister(fd)
        os.close(fd)


def read(path: Path, *, follow: bool = False, tail: int | None = None,
         since: float | None = None, finished: Callable[[], bool] = lambda: True,
         poll: float = 0.1) -> Iterator[Entry]:
    """The reader's end: (stream, text, unix time) of each record.  With
    ``since``, only what was written from then on; with ``tail``, only the
    last ``tail`` of what is there now; with ``follow``, then what comes
    until ``finished()`` (the container exited and its owner is gone), and
    what its owner wrote before going."""
    pos = 0
    buf = b""
    first = True
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
                pos = f.tell()
        except FileNotFoundError:
            data = b""
        buf += data
        *lines, buf = buf.split(b"\n")
        entries = []
        for line in lines:
            e = decode(line)
            if e is not None and (since is None or e[2] >= since):
                entries.append(e)
        if first and tail is not None:
            entries = entries[-tail:] if tail > 0 else []
        first = False
        yield from entries
        if not follow:
            return
        if not data:
            if finished():
                follow = False  # one more read: the owner may have written its last lines
                continue
            time.sleep(poll)
