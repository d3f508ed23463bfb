"""Bad registries and bad references: one line on stderr, exit 2 (or 1 when
the registry keeps failing), and the store exactly as it was (fingerprinted:
the state database's dump and every file below the root)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.runtime.images.builders import E, image_files, layer_tar, write_tar
from tests.volmerge.cli.test_bad_input_matrix import fingerprint

from .scripted import Scripted
from .server import PASSWORD, USER, Registry


@pytest.fixture
def store_before(cli, root: Path, fixture_image, env) -> tuple:
    """A store holding busybox, logged in to the registry; its fingerprint."""
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    r = cli("login", "-u", USER, "--password-stdin", env["REGISTRY_HOST"], input=PASSWORD + "\n",
            env=env)
    assert r.returncode == 0, r.stderr
    return _state(root)


def _state(root: Path) -> tuple:
    """The fingerprint, less the empty flock files of ``locks/`` (a layer's
    lock is taken before its download, as ``image load`` takes it before
    extraction: an empty file, no content)."""
    dump, files = fingerprint(root)
    return dump, [f for f in files if not (f[0].startswith("locks/") and f[2] == 0)]


@pytest.fixture
def env(tmp_path: Path, registry: Registry) -> dict[str, str]:
    return {"VOLMERGE_CERTS_D": str(registry.certs_d),
            "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "REGISTRY_HOST": registry.host}


def _refused(cli, root: Path, before: tuple, env: dict[str, str], *args: str,
             code: int = 2, says: str = "") -> str:
    r = cli(*args, env=env)
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volmerge: error: "), r.stderr
    assert says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert _state(root) == before
    return r.stderr


def _unique_image(tmp_path: Path, tag: str, entries: list[E] | None = None) -> Path:
    """An oci-archive whose blobs no other test shares (so they can be tampered with)."""
    layer = layer_tar(entries or [E("etc", "dir"), E("etc/unique", data=tag.encode() * 4096)])
    return write_tar(image_files([layer], compression="gzip", ref=None), tmp_path / f"{tag}.tar")


def _layer_digest(podman, registry: Registry, ref: str) -> str:
    r = podman("inspect", "--raw", "--cert-dir", str(registry.cert_dir), "--creds",
               registry.creds, f"docker://{ref}", tool="skopeo")
    return json.loads(r.stdout)["layers"][0]["digest"]


def test_unknown_host(cli, root, store_before, env) -> None:
    _refused(cli, root, store_before, env, "pull", "registry.invalid:5000/x/y:1",
             says="unknown registry host")


def test_unauthorized_without_login(cli, root, store_before, env, registry) -> None:
    os.unlink(env["REGISTRY_AUTH_FILE"])
    _refused(cli, root, store_before, env, "pull", registry.ref("seed/none:1"),
             says="requires authentication")


def test_wrong_credentials(cli, root, store_before, env, registry) -> None:
    Path(env["REGISTRY_AUTH_FILE"]).write_text(json.dumps(
        {"auths": {registry.host: {"auth": "dGVzdGVyOndyb25n"}}}))        # tester:wrong
    _refused(cli, root, store_before, env, "pull", registry.ref("seed/none:1"),
             says="unauthorized")


def test_unknown_tag(cli, root, store_before, env, registry, module_podman, tmp_path) -> None:
    registry.skopeo_copy(module_podman, f"oci-archive:{_unique_image(tmp_path, 'tag404')}",
                         "bad/tag404:1")
    _refused(cli, root, store_before, env, "pull", registry.ref("bad/tag404:nope"),
             says="not found")
    _refused(cli, root, store_before, env, "pull", registry.ref("bad/no-such-repo:1"),
             says="not found")


def test_untrusted_certificate(cli, root, store_before, env, registry, tmp_path) -> None:
    env = dict(env, VOLMERGE_CERTS_D=str(tmp_path / "empty-certs.d"))
    _refused(cli, root, store_before, env, "pull", registry.ref("bad/x:1"),
             says="not trusted")


def test_blob_tampered_in_the_registry(cli, root, store_before, env, registry, module_podman,
                                       tmp_path) -> None:
    registry.skopeo_copy(module_podman, f"oci-archive:{_unique_image(tmp_path, 'tampered')}",
                         "bad/tampered:1")
    data = registry.blob_data(_layer_digest(module_podman, registry, registry.ref("bad/tampered:1")))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                          # same size, other bytes
    data.write_bytes(bytes(raw))
    _refused(cli, root, store_before, env, "pull", registry.ref("bad/tampered:1"),
             says="digest mismatch")


def test_blob_truncated_in_the_registry(cli, root, store_before, env, registry, module_podman,
                                        tmp_path) -> None:
    registry.skopeo_copy(module_podman, f"oci-archive:{_unique_image(tmp_path, 'truncated')}",
                         "bad/truncated:1")
    data = registry.blob_data(_layer_digest(module_podman, registry,
                                            registry.ref("bad/truncated:1")))
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    _refused(cli, root, store_before, env, "pull", registry.ref("bad/truncated:1"),
             says="truncated")


@pytest.mark.parametrize("entries, says", [
    ([E("../escape", data=b"x")], "escapes the layer"),
    ([E("/abs", data=b"x")], "absolute path"),
    ([E("lnk", "symlink", link="/etc"), E("lnk/passwd", data=b"x")], "lnk/passwd"),
])
def test_hostile_layer(cli, root, store_before, env, registry, module_podman, tmp_path,
                       entries: list[E], says: str) -> None:
    name = f"bad/hostile{abs(hash(says)) % 10000}:1"
    registry.skopeo_copy(module_podman, f"oci-archive:{_unique_image(tmp_path, 'h', entries)}",
                         name)
    _refused(cli, root, store_before, env, "pull", registry.ref(name), says=says)


def test_manifest_too_large(cli, root, store_before, env, pki) -> None:
    s = Scripted(pki)
    try:
        big = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "annotations": {"pad": "x" * (5 << 20)}}).encode()
        s.manifests["1"] = (big, "application/vnd.oci.image.manifest.v1+json")
        _refused(cli, root, store_before, dict(env), "pull", f"{s.host}/big/m:1",
                 says="too large")
    finally:
        s.stop()


def test_bad_references_and_options(cli, root, store_before, env, registry) -> None:
    for args, says in ((["pull", "UPPER/Case:1"], "invalid image reference"),
                       (["pull", registry.ref("x:1"), "--platform", "linux"], "invalid platform"),
                       (["pull", registry.ref("x:1"), "--tls-verify", "maybe"], "--tls-verify"),
                       (["push", "no-such-image", registry.ref("x:1")], "no such image"),
                       (["login", "-u", USER, "--password-stdin", "bad host!"], "invalid registry")):
        _refused(cli, root, store_before, env, *args, says=says)
