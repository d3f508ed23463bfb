"""The layer stream is decompressed and hashed by a thread of its own ahead
of the tar parser (runtime/tarsafe.py ``_Ahead``): its errors reach the
caller as before, and the thread never outlives the extraction."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from volmerge.runtime.errors import BadInput, NotDone
from volmerge.runtime.tarsafe import extract_layer

from .builders import E, compress, layer_tar, sha


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tarsafe-read"]


class _Breaks(io.RawIOBase):
    """The first ``keep`` bytes of ``data``, then the connection drops."""

    def __init__(self, data: bytes, keep: int) -> None:
        super().__init__()
        self.data, self.keep, self.pos = data, keep, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        if self.pos >= self.keep:
            raise NotDone("connection lost")
        chunk = self.data[self.pos:min(self.keep, self.pos + len(b))]
        b[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def _big(n: int = 40) -> bytes:
    return layer_tar([E(f"f{i}", data=os.urandom(64 << 10)) for i in range(n)])


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_a_large_layer_hashes_as_it_reads(tmp_path: Path, how: str) -> None:
    tar = _big()
    blob = tmp_path / "blob"
    blob.write_bytes(compress(tar, how))
    (tmp_path / "out").mkdir()
    got = extract_layer(blob, tmp_path / "out")
    assert got.diff_id == sha(tar) and got.entries == 40
    assert _reader_threads() == []


def test_a_stream_that_fails_mid_layer_raises_its_error(tmp_path: Path) -> None:
    data = compress(_big(), "gzip")
    (tmp_path / "out").mkdir()
    src = io.BufferedReader(_Breaks(data, len(data) // 2))
    with pytest.raises(NotDone, match="connection lost"):
        extract_layer(src, tmp_path / "out", size=len(data))
    assert _reader_threads() == []


def test_a_truncated_gzip_stream_is_bad_input(tmp_path: Path) -> None:
    data = compress(_big(), "gzip")
    blob = tmp_path / "blob"
    blob.write_bytes(data[: len(data) // 2])
    (tmp_path / "out").mkdir()
    with pytest.raises(BadInput, match="truncated"):
        extract_layer(blob, tmp_path / "out", label="layer 1/1")
    assert _reader_threads() == []


def test_a_hostile_entry_stops_the_reading(tmp_path: Path) -> None:
    """Refused at the first entry, with megabytes still to read: the reader
    thread stops too (it holds at most a few chunks)."""
    tar = layer_tar([E("../escape", data=b"x")] + [E(f"f{i}", data=os.urandom(64 << 10))
                                                   for i in range(200)])
    blob = tmp_path / "blob"
    blob.write_bytes(tar)
    (tmp_path / "out").mkdir()
    with pytest.raises(BadInput, match="escapes"):
        extract_layer(blob, tmp_path / "out")
    assert _reader_threads() == []
    assert os.listdir(tmp_path / "out") == []


class _HeldBack(io.RawIOBase):
    """A download still arriving: ``keep`` bytes, the rest once ``go`` is set."""

    def __init__(self, data: bytes, keep: int, go: threading.Event) -> None:
        super().__init__()
        self.data, self.keep, self.go, self.pos = data, keep, go, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        if self.pos >= self.keep and not self.go.wait(30):
            raise NotDone("the rest never came")
        chunk = self.data[self.pos:self.pos + min(len(b), 64 << 10)]
        b[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def test_the_reader_gives_what_has_arrived(tmp_path: Path) -> None:
    """The first file is extracted while the rest of the layer is held
    back: the reader thread never waits for a whole chunk."""
    first = os.urandom(1 << 20)
    tar = layer_tar([E("a", data=first), E("b", data=os.urandom(2 << 20))])
    go = threading.Event()
    seen: list[bool] = []
    out = tmp_path / "out"
    out.mkdir()

    def watch() -> None:
        deadline = time.monotonic() + 20
        while not go.is_set() and time.monotonic() < deadline:
            if (out / "a").exists() and (out / "a").stat().st_size == len(first):
                seen.append(True)
                go.set()
            go.wait(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        got = extract_layer(io.BufferedReader(_HeldBack(tar, (3 << 20) // 2, go)), out,
                            size=len(tar), progress=lambda _d, _t: None)
    finally:
        go.set()
        t.join()
    assert seen, "the first file was not extracted while the rest was held back"
    assert got.diff_id == sha(tar)
