"""The supervisor's start notification (runtime/supervisor.py): both ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.runtime.supervisor import Notice

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def test_ok_and_errors_round_trip():
    assert Notice.decode(Notice(True).encode()) == Notice(True, 0)
    assert Notice.decode(Notice(False, 2, "bad --user").encode()) == Notice(False, 2, "bad --user")
    assert Notice.decode(Notice(False, 1, "runc failed\nat line 2").encode()) == \
        Notice(False, 1, "runc failed at line 2")


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xff\xfe"])
def test_nothing_or_garbage_decodes_to_none(data):
    assert Notice.decode(data) is None


@given(st.sampled_from([1, 2]), st.text())
def test_any_message_comes_back_on_one_line(code, message):
    data = Notice(False, code, message).encode()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    got = Notice.decode(data)
    assert got is not None and not got.ok and got.code == code
    assert got.message == " ".join(message.split())


def test_an_undecodable_path_in_the_message_is_no_crash():
    """An exception naming a path with bytes that are not UTF-8 (os.fsdecode's
    surrogates): encoding it raised UnicodeEncodeError in the supervisor."""
    got = Notice.decode(Notice(False, 1, "no such file /tmp/\udcff").encode())
    assert got == Notice(False, 1, "no such file /tmp/?")


def test_only_the_first_of_two_notices_is_read():
    """The supervisor sends once: ``ok`` then its final ``err`` must read as ok."""
    assert Notice.decode(Notice(True).encode() + Notice(False, 1, "x").encode()) == Notice(True, 0)


def test_a_notice_is_an_immutable_value():
    n = Notice(False, 2, "x")
    with pytest.raises(AttributeError):
        n.ok = True  # type: ignore[misc]
    assert n == Notice(False, 2, "x") and hash(n) == hash(Notice(False, 2, "x"))
    assert n != Notice(False, 1, "x") and "code=2" in repr(n)
