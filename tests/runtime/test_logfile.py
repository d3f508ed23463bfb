"""Both ends of a detached container's log format (runtime/logfile.py):
what the supervisor writes, ``logs`` reads back.  No root, no container."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from volmerge.runtime import logfile
from volmerge.runtime.logfile import MAX_PIECE, Framer, LogWriter


def _frame(chunks: list[bytes]) -> list[bytes]:
    f = Framer()
    out = [p for c in chunks for p in f.feed(c)]
    return out + f.flush()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode()),
    st.sampled_from([b"\n", b"\xe2\x82", b"\xac", b"x" * (MAX_PIECE + 3)]),
), max_size=12))
def test_framing_keeps_every_byte_in_order_and_cuts_only_where_allowed(chunks):
    pieces = _frame(chunks)
    assert b"".join(pieces) == b"".join(chunks)
    for p in pieces[:-1]:
        # a piece is a line, or a long line's piece cut on a character boundary
        assert p.endswith(b"\n") or len(p) > MAX_PIECE - 4
    assert all(p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(logfile.STREAMS), st.text(max_size=300)),
                max_size=20),
       st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_what_is_written_is_read_back(tmp_path_factory, entries, t):
    path = tmp_path_factory.mktemp("log") / "log"
    with open(path, "wb") as f:
        for stream, text in entries:
            for piece in _frame([text.encode()]):
                f.write(logfile.encode(stream, piece, t))
    got = list(logfile.read(path))
    # per stream, the texts concatenate to what was written
    for stream in logfile.STREAMS:
        assert "".join(x for s, x, _ in got if s == stream) == \
            "".join(x for s, x in entries if s == stream)
    assert all(abs(ts - round(t, 6)) < 1e-6 for _, _, ts in got)


def test_a_long_line_is_cut_on_a_character_boundary():
    line = ("€" * (MAX_PIECE // 3 + 5)).encode()  # 3 bytes a character
    assert (MAX_PIECE + 1) % 3  # the first chunk ends inside a character
    pieces = _frame([line[:MAX_PIECE + 1], line[MAX_PIECE + 1:] + b"\n"])
    assert len(pieces) == 2
    assert "".join(p.decode() for p in pieces) == "€" * (MAX_PIECE // 3 + 5) + "\n"


def test_tail_larger_than_the_log_gives_all_of_it(tmp_path: Path):
    """It gave the last ``len - tail`` entries from the end (a negative slice)."""
    path = tmp_path / "log"
    w = LogWriter(path)
    for i in range(3):
        w.write("stdout", f"{i}\n".encode())
    w.close()
    assert [x for _, x, _ in logfile.read(path, tail=5)] == ["0\n", "1\n", "2\n"]
    assert [x for _, x, _ in logfile.read(path, tail=2)] == ["1\n", "2\n"]
    assert list(logfile.read(path, tail=0)) == []


def test_damaged_records_are_skipped_and_since_filters(tmp_path: Path):
    path = tmp_path / "log"
    path.write_bytes(logfile.encode("stderr", b"old\n", 10.0) + b"{not json\n" + b"123\n"
                     + logfile.encode("stdout", b"new\n", 20.0) + b'{"t": 30, "s"')
    assert list(logfile.read(path)) == [("stderr", "old\n", 10.0), ("stdout", "new\n", 20.0)]
    assert list(logfile.read(path, since=15)) == [("stdout", "new\n", 20.0)]


def test_follow_reads_until_finished_then_once_more(tmp_path: Path):
    path = tmp_path / "log"
    w = LogWriter(path)
    w.write("stdout", b"a\n")
    calls = []

    def finished() -> bool:
        calls.append(1)
        if len(calls) == 1:
            w.write("stdout", b"b\n")  # written while the reader waits
            return False
        w.write("stderr", b"last\n")  # the owner's last words, then it is gone
        return True

    got = [x for _, x, _ in logfile.read(path, follow=True, finished=finished, poll=0)]
    w.close()
    assert got == ["a\n", "b\n", "last\n"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
