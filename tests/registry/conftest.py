"""Fixtures of the registry tests: a CA, real registries, isolated podman."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.podman import Podman, podman

from .server import Pki, Registry, make_pki

__all__ = ["podman"]


def _need(*tools: str) -> None:
    import os

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"{', '.join(missing)} needed (Makefile DEB_PACKAGES)")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    _need("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    """A registry with an htpasswd user (basic auth), for the whole module."""
    _need("docker-registry", "htpasswd", "skopeo", "podman")
    r = Registry(tmp_path_factory.mktemp("registry"), pki, auth=True)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    """A registry anyone may pull from and push to (anonymous)."""
    _need("docker-registry", "skopeo", "podman")
    r = Registry(tmp_path_factory.mktemp("open-registry"), pki, auth=False)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def module_podman(tmp_path_factory: pytest.TempPathFactory):
    """An isolated podman (and skopeo) for a module's seeding."""
    p = Podman(tmp_path_factory.mktemp("podman") / "p")
    yield p
    p.close()


@pytest.fixture
def env(tmp_path: Path, registry: Registry) -> dict[str, str]:
    """What a volmerge subprocess needs: the test's certs.d and its own auth file."""
    return {"VOLMERGE_CERTS_D": str(registry.certs_d),
            "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
