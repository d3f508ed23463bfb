"""sha256 of a few bytes on start-up paths, without hashlib.

Importing hashlib loads _hashlib, the OpenSSL binding (~2 ms of a cold
bridged ``run``, more with a cold page cache).  The names a bridged run
derives (the store's tag, a veth's name, the NAT table's name) hash a few
bytes each, which the interpreter's own sha256 module does as well: the
same digests.  Python 3.12 renamed that module ``_sha2``; a build without
it falls back to hashlib.
"""

from __future__ import annotations


def sha256_hex(data: bytes) -> str:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
        except ImportError:  # a build without the builtin hashes
            from hashlib import sha256
    digest: str = sha256(data).hexdigest()
    return digest
