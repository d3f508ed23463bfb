"""The preloaded system CA context (registry/castore.py) is the one
``ssl.create_default_context()`` makes: same CAs, same verification."""

from __future__ import annotations

import ssl

import pytest

from volmerge.runtime.registry import castore

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def _same(a: ssl.SSLContext, b: ssl.SSLContext) -> None:
    assert a.verify_mode == b.verify_mode == ssl.CERT_REQUIRED
    assert a.check_hostname and b.check_hostname
    assert (a.options, a.verify_flags, a.minimum_version, a.maximum_version) == (
        b.options, b.verify_flags, b.minimum_version, b.maximum_version)
    assert a.cert_store_stats() == b.cert_store_stats()
    key = lambda c: sorted(repr(sorted(x.items())) for x in c.get_ca_certs())  # noqa: E731
    assert key(a) == key(b)


def test_build_is_the_default_context() -> None:
    _same(castore.build(), ssl.create_default_context())


def test_the_environment_names_the_cas_as_for_openssl(monkeypatch, tmp_path) -> None:
    """SSL_CERT_FILE / SSL_CERT_DIR replace the defaults, as they do for
    create_default_context: one CA, a bundle OpenSSL cannot read, none."""
    one = ssl.DER_cert_to_PEM_cert(ssl.create_default_context().get_ca_certs(True)[0])
    (tmp_path / "one.pem").write_text(one)
    (tmp_path / "bad.pem").write_text(one[: len(one) // 2])
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    for bundle, n in (("one.pem", 1), ("bad.pem", 0), ("missing.pem", 0)):
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / bundle))
        _same(castore.build(), ssl.create_default_context())
        assert castore.build().cert_store_stats()["x509_ca"] == n


def test_a_preloaded_context_serves_once() -> None:
    castore.preload()
    castore.preload()   # one under way is enough
    first = castore.default_context()
    second = castore.default_context()  # nothing preloaded: a new one
    assert first is not second
    _same(first, ssl.create_default_context())
    _same(second, ssl.create_default_context())
