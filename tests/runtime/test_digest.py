"""runtime/digest.py: the same digests as hashlib. Pure: no root."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from volmerge.runtime.digest import sha256_hex


@given(st.binary(max_size=300))
def test_the_digest_is_hashlibs(data: bytes) -> None:
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
