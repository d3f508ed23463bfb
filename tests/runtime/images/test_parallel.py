"""Layers are extracted several at a time (runtime/imageload.py): a layer
still arriving does not hold back the others, and a failing layer stops the
ones still arriving, with nothing left in the store."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from volmerge.runtime import oci
from volmerge.runtime.errors import BadInput, NotDone
from volmerge.runtime.images import ImageStore
from volmerge.runtime.layers import work_dir
from volmerge.runtime.store import Store

from .builders import E, image_files, layer_tar, write_dir, write_tar
from .conftest import store_is_empty

WAIT = 10.0   # seconds a held-back stream waits before it gives up


class _HeldBack(io.RawIOBase):
    """A staged blob read as if still downloading: the first half at once,
    the rest once ``gate`` is set; NotDone when ``cancel`` is set first (as
    a download's Follower) or after WAIT seconds."""

    def __init__(self, path: Path, gate: threading.Event, cancel: threading.Event) -> None:
        super().__init__()
        self.data = path.read_bytes()
        self.pos, self.gate, self.cancel = 0, gate, cancel

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        if self.pos >= len(self.data) // 2:
            deadline = time.monotonic() + WAIT
            while not self.gate.wait(0.02):
                if self.cancel.is_set():
                    raise NotDone("cancelled")
                if time.monotonic() > deadline:
                    raise NotDone("held back: the other layer never finished")
        chunk = self.data[self.pos:self.pos + len(b)]
        b[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


class _Stream:
    def __init__(self, raw: io.RawIOBase, on_finish: threading.Event | None = None) -> None:
        self.reader = io.BufferedReader(raw)
        self.on_finish = on_finish

    def finish(self) -> None:
        if self.on_finish is not None:
            self.on_finish.set()


def _staged(store: Store, tmp_path: Path, layers: list[bytes], staging: Path) -> oci.Staged:
    src = write_dir(image_files(layers, compression="none"), tmp_path / "layout")
    return oci.read_source(src, staging)[0]


def _big_layer() -> bytes:
    return layer_tar([E("bottom/big", data=os.urandom(256 << 10)), E("bottom/after", data=b"x")])


def test_a_layer_still_arriving_does_not_hold_back_the_next(store: Store, tmp_path: Path) -> None:
    images = ImageStore(store)
    top_done = threading.Event()
    cancel = threading.Event()
    with work_dir(store, "load-") as staging:
        s = _staged(store, tmp_path, [_big_layer(), layer_tar([E("top/f", data=b"top")])], staging)
        bottom, top = s.layers

        def ready(blob: oci.Blob) -> _Stream:
            if blob.digest == bottom.digest:   # the rest comes once the top layer is done
                return _Stream(_HeldBack(blob.path, top_done, cancel))
            return _Stream(io.FileIO(blob.path), on_finish=top_done)

        img = images.load_staged([s], ready=ready, cancel=cancel)[0]
    assert not cancel.is_set()
    assert (img.layers[0].path / "bottom" / "after").read_bytes() == b"x"
    assert (img.layers[1].path / "top" / "f").read_bytes() == b"top"


def test_a_failing_layer_stops_one_still_arriving(store: Store, root: Path,
                                                  tmp_path: Path) -> None:
    images = ImageStore(store)
    never = threading.Event()
    cancel = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(BadInput, match="absolute"):
        with work_dir(store, "load-") as staging:
            s = _staged(store, tmp_path, [_big_layer(), layer_tar([E("/abs", data=b"2")])],
                        staging)
            bottom = s.layers[0]

            def ready(blob: oci.Blob) -> _Stream | None:
                if blob.digest == bottom.digest:
                    return _Stream(_HeldBack(blob.path, never, cancel))
                return None

            images.load_staged([s], ready=ready, cancel=cancel)
    assert cancel.is_set()
    assert time.monotonic() - t0 < WAIT   # stopped, not timed out
    store_is_empty(root)


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "extract-flush"]


def test_the_flushing_thread_ends_with_the_load(store: Store, root: Path, tmp_path: Path) -> None:
    """Each extracted layer asks a thread of the load for a ``syncfs`` (its
    data reaches the disk while the others extract); the thread never
    outlives the load, whether it commits or fails."""
    images = ImageStore(store)
    with work_dir(store, "load-") as staging:
        s = _staged(store, tmp_path, [_big_layer(), layer_tar([E("top/f", data=b"top")])],
                    staging)
        img = images.load_staged([s])[0]
    assert (img.layers[1].path / "top" / "f").read_bytes() == b"top"
    assert _flushers() == []
    with pytest.raises(BadInput, match="absolute"), work_dir(store, "load-") as staging:
        s = _staged(store, tmp_path / "bad", [layer_tar([E("ok", data=b"1")]),
                                              layer_tar([E("/abs", data=b"2")])], staging)
        images.load_staged([s])
    assert _flushers() == []


def test_a_load_that_adds_no_blob_syncs_no_directory(store: Store, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The blobs directory is fsynced when a blob went into it, not when an
    image the store has is loaded (tagged) again: a warm pull's commit."""
    from volmerge.runtime import atomicfile

    synced: list[str] = []
    real = atomicfile.fsync_dir

    def spy(path: str | os.PathLike[str]) -> None:
        synced.append(os.fspath(path))
        real(path)

    monkeypatch.setattr(atomicfile, "fsync_dir", spy)
    images = ImageStore(store)
    archive = write_tar(image_files([layer_tar([E("f", data=b"1")])], ref="localhost/t:1"),
                        tmp_path / "img.tar")
    blobs = os.fspath(store.path("blobs", "sha256"))
    images.load(archive)
    assert blobs in synced
    synced.clear()
    images.load(archive, tag="localhost/t:2")
    assert blobs not in synced
    assert images.get("localhost/t:2").id == images.get("localhost/t:1").id
