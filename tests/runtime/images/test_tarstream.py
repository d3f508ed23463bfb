"""The layer tar reader (runtime/tarstream.py) against ``tarfile``: on any
archive ``tarfile`` writes (ustar, GNU, pax), read in chunks of any size,
it gives the same entries and data; on damaged archives it either refuses
or agrees with ``tarfile``; what it refuses on purpose is refused.
Pure: no root, no store."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volmerge.runtime.tarstream import Member, TarFormatError, TarStream

_FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
_TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
          tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE]


def _chunks(data: bytes, sizes: list[int]) -> Callable[[], bytes]:
    pos = [0]
    k = [0]

    def chunk() -> bytes:
        n = sizes[k[0] % len(sizes)] if sizes else 1 << 20
        k[0] += 1
        out = data[pos[0]:pos[0] + n]
        pos[0] += len(out)
        return out
    return chunk


def _ours(data: bytes, sizes: list[int]) -> list[tuple[object, ...]]:
    ts = TarStream(_chunks(data, sizes))
    out = []
    while (m := ts.next()) is not None:
        body = ts.read(m.size) if m.type in (b"0", b"\0", b"7") else b""
        out.append(_key(m, body))
    ts.drain()
    return out


def _theirs(data: bytes) -> list[tuple[object, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            out.append(_key(m, f.read() if f is not None else b""))
    return out


def _key(m: Member | tarfile.TarInfo, body: bytes) -> tuple[object, ...]:
    pax = {k: v for k, v in m.pax_headers.items() if k != "hdrcharset"}
    return (m.name, m.type, m.mode, m.uid, m.gid, m.size, m.mtime, m.linkname,
            m.devmajor, m.devminor, pax, body)


_name_part = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                     min_size=1, max_size=40)
_names = st.lists(_name_part, min_size=1, max_size=8).map("/".join)


@st.composite
def _entries(draw: st.DrawFn, fmt: str) -> list[tarfile.TarInfo]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        ti = tarfile.TarInfo(draw(_names) + draw(st.sampled_from(["", "/"])))
        ti.type = draw(st.sampled_from(_TYPES))
        ti.mode = draw(st.integers(0, 0o7777))
        big = fmt != "ustar"
        ti.uid = draw(st.integers(0, (1 << 40) if big else 0o7777777))
        ti.gid = draw(st.integers(0, 0o7777777))
        ti.mtime = draw(st.integers(0, (1 << 36) if big else 0o77777777777))
        if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            ti.linkname = draw(_names)
        if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            ti.devmajor, ti.devminor = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        if fmt == "pax" and draw(st.booleans()):
            ti.pax_headers = {f"SCHILY.xattr.user.{draw(_name_part)}": draw(st.text(max_size=50))}
        if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) and not (
                ti.type == tarfile.AREGTYPE and ti.name.endswith("/")):   # (read as a V7 dir)
            ti.size = draw(st.integers(0, 3000))
        out.append(ti)
    return out


def _write(fmt: str, entries: list[tarfile.TarInfo], glob: dict[str, str]) -> bytes | None:
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=_FORMATS[fmt], pax_headers=glob,
                          encoding="utf-8", errors="surrogateescape") as tf:
            for i, ti in enumerate(entries):
                tf.addfile(ti, io.BytesIO(bytes([i % 251]) * ti.size) if ti.isreg() else None)
    except (ValueError, UnicodeError):
        return None   # not representable in this format (ustar: name too long...)
    return buf.getvalue()


_sizes = st.lists(st.integers(1, 1500), max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(sorted(_FORMATS)), sizes=_sizes)
def test_agrees_with_tarfile(data: st.DataObject, fmt: str, sizes: list[int]) -> None:
    glob = {}
    if fmt == "pax" and data.draw(st.booleans()):
        glob = {"comment": data.draw(st.text(max_size=20)),
                "SCHILY.xattr.user.all": data.draw(st.text(max_size=10))}
    raw = _write(fmt, data.draw(_entries(fmt)), glob)
    if raw is None:
        return
    assert _ours(raw, sizes) == _theirs(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(sorted(_FORMATS)), sizes=_sizes)
def test_damaged_archives_are_refused_or_read_as_tarfile_reads_them(
        data: st.DataObject, fmt: str, sizes: list[int]) -> None:
    raw = _write(fmt, data.draw(_entries(fmt)), {})
    if raw is None:
        return
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    damaged = bytes(b[:cut])
    try:
        ours = _ours(damaged, sizes)
    except TarFormatError:
        return
    assert ours == _theirs(damaged)


def _hdr(name: str, typ: bytes, size: int = 0, fmt: int = tarfile.USTAR_FORMAT,
         **kw: object) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size = typ, size
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti.tobuf(fmt)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 512)


def _read_all(raw: bytes) -> list[Member]:
    ts = TarStream(_chunks(raw, []))
    out = []
    while (m := ts.next()) is not None:
        out.append(m)
    return out


def test_v7_directory_spelling() -> None:
    raw = _hdr("d/", tarfile.AREGTYPE) + b"\0" * 1024
    (m,) = _read_all(raw)
    assert (m.name, m.type) == ("d", b"5")


def test_end_of_archive() -> None:
    f = _hdr("a", tarfile.REGTYPE, 3) + _pad(b"abc")
    assert [m.name for m in _read_all(f + b"\0" * 1024 + b"junk after the end")] == ["a"]
    assert [m.name for m in _read_all(f)] == ["a"]      # the end of data at a header boundary


@pytest.mark.parametrize("raw, why", [
    (b"", "empty file"),
    (_hdr("a", tarfile.REGTYPE, 3) + _pad(b"abc") + b"x" * 100, "truncated at byte 1024"),
    (_hdr("a", tarfile.REGTYPE, 3) + b"ab", "truncated"),
    (_hdr("a", tarfile.REGTYPE)[:-1] + b"!", "bad checksum"),
    (_hdr("a", tarfile.REGTYPE, 0) + b"\x01" + b"\0" * 511, "corrupt header at byte 512"),
    (_hdr("a", tarfile.REGTYPE)[:100] + b"12x4567\0" + _hdr("a", tarfile.REGTYPE)[108:],
     "corrupt header"),
    (_hdr("s", b"S", 0) + b"\0" * 1024, "sparse"),
    (_hdr("p", tarfile.XHDTYPE, 19) + _pad(b"19 GNU.sparse.map=\n") + _hdr("s", tarfile.REGTYPE),
     "sparse"),
    (_hdr("p", tarfile.XHDTYPE, 9) + _pad(b"9 path=x") + _hdr("s", tarfile.REGTYPE),
     "malformed pax"),
    (_hdr("p", tarfile.XHDTYPE, 11) + _pad(b"11 size=-1\n") + _hdr("s", tarfile.REGTYPE),
     "invalid size"),
    (_hdr("g", tarfile.XGLTYPE, 10) + _pad(b"10 path=x\n") + _hdr("s", tarfile.REGTYPE),
     "global pax header"),
    (_hdr("L", b"L", 2 << 20) + b"\0" * 512, "too large"),
    (_hdr("L", b"L", 2) + _pad(b"ab") + b"\0" * 1024, "precedes the end"),
    ((_hdr("L", b"L", 2) + _pad(b"ab")) * 9 + _hdr("a", tarfile.REGTYPE), "more than 8"),
    (_hdr("a", tarfile.REGTYPE, 0, tarfile.GNU_FORMAT, uid=-1), "negative"),
])
def test_refused(raw: bytes, why: str) -> None:
    with pytest.raises(TarFormatError, match=why):
        _read_all(raw)
