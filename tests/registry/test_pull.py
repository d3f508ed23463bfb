"""`volmerge pull` from a real registry (distribution 2.8, TLS, htpasswd):
images pushed by skopeo as OCI, Docker schema 2 and zstd; an image index
with two platforms; layers the store has are not downloaded again; the
pulled image is the image `image load` makes of the same archive."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.runtime.images.builders import E, config_digest, image_files, layer_tar, sha, write_tar
from volmerge.runtime import oci

from .server import Registry

BASE = layer_tar([E("bin", "dir"), E("bin/tool", data=b"tool", mode=0o755), E("etc", "dir"),
                  E("etc/conf", data=b"a=1\n")])
TOP = layer_tar([E("etc", "dir"), E("etc/conf", data=b"a=2\n"), E("etc/.wh.old")])


def _seed(registry: Registry, podman, archive: Path, name: str, *extra: str) -> str:
    registry.skopeo_copy(podman, f"oci-archive:{archive}", name, *extra)
    return registry.ref(name)


@pytest.fixture(scope="module")
def seeded(registry: Registry, module_podman, fixture_image) -> dict[str, str]:
    """busybox in the registry as OCI (gzip) and Docker schema 2."""
    bb = fixture_image("busybox")
    return {
        "oci": _seed(registry, module_podman, bb, "seed/busybox:oci"),
        "v2s2": _seed(registry, module_podman, bb, "seed/busybox:v2s2", "--format", "v2s2"),
    }


def _login(cli, registry: Registry, env: dict[str, str]) -> None:
    r = cli("login", "-u", "tester", "--password-stdin", registry.host, input="s3cret-pw\n", env=env)
    assert r.returncode == 0, r.stderr


def _ls(cli) -> list[dict]:
    r = cli("image", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _manifest(podman, registry: Registry, ref: str) -> dict:
    r = podman("inspect", "--raw", "--cert-dir", str(registry.cert_dir), "--creds",
               registry.creds, f"docker://{ref}", tool="skopeo")
    return json.loads(r.stdout)


@pytest.mark.parametrize("form", ["oci", "v2s2"])
def test_pull_each_manifest_and_compression(cli, registry, seeded, env, module_podman,
                                            fixture_image, tmp_path: Path, form: str) -> None:
    ref = seeded[form]
    m = _manifest(module_podman, registry, ref)
    want = {"oci": (oci.OCI_MANIFEST, "+gzip"), "v2s2": (oci.DOCKER_MANIFEST, ".gzip")}[form]
    assert m["mediaType"] == want[0] and m["layers"][0]["mediaType"].endswith(want[1])
    _login(cli, registry, env)
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    assert "downloaded" in r.stdout and r.stderr == ""               # plain lines: no terminal
    [img] = _ls(cli)
    assert img["RepoTags"] == [ref]
    digest = r.stdout.split("Digest: ")[1].split()[0]
    assert img["RepoDigests"] == [f"{ref.rsplit(':', 1)[0]}@{digest}"]
    # the same image id as `image load` of the archive skopeo read
    cfg = json.loads(module_podman("inspect", "--config", f"oci-archive:{fixture_image('busybox')}",
                                   tool="skopeo").stdout)
    assert cfg["rootfs"]["diff_ids"] == json.loads(
        cli("image", "inspect", ref, "--json").stdout)["RootFS"]["diff_ids"]
    table = cli("image", "ls", "--digests").stdout.splitlines()
    assert table[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"] and digest in table[1]


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_pull_zstd_and_plain_layers(cli, registry, env, module_podman, tmp_path: Path,
                                    compression: str) -> None:
    """zstd layers pushed by skopeo; plain ones by `volmerge push` (skopeo
    would compress them)."""
    files = image_files([BASE, TOP], compression=compression, ref=None)
    archive = write_tar(files, tmp_path / "img.tar")
    ref = registry.ref(f"layers/{compression}:1")
    _login(cli, registry, env)
    if compression == "zstd":
        registry.skopeo_copy(module_podman, f"oci-archive:{archive}", f"layers/{compression}:1")
    else:
        assert cli("image", "load", str(archive), "--tag", "plain:1").returncode == 0
        r = cli("push", "plain:1", ref, env=env)
        assert r.returncode == 0, r.stderr
        assert cli("image", "rm", "plain:1").returncode == 0
    m = _manifest(module_podman, registry, ref)
    suffix = {"zstd": "+zstd", "none": ".tar"}[compression]
    assert all(x["mediaType"].endswith(suffix) for x in m["layers"]), m
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(cli("image", "inspect", ref, "--json").stdout)
    assert [x["DiffID"] for x in data["Layers"]] == [sha(BASE), sha(TOP)]
    assert (Path(data["Layers"][1]["Path"]) / "etc" / "conf").read_text() == "a=2\n"
    assert data["Id"] == config_digest(files)


def test_pulled_image_equals_loaded_and_runs(cli, registry, seeded, env, fixture_image) -> None:
    _login(cli, registry, env)
    r = cli("pull", "-q", seeded["oci"], env=env)
    assert r.returncode == 0, r.stderr
    pulled_id = r.stdout.strip()
    assert r.stderr == ""                                           # --quiet
    r = cli("image", "load", str(fixture_image("busybox")))
    assert r.returncode == 0, r.stderr
    assert [i["Id"] for i in _ls(cli)] == [pulled_id]               # one image, two names
    r = cli("run", "--rm", seeded["oci"], "/bin/busybox", "echo", "pulled")
    assert r.returncode == 0 and r.stdout.strip() == "pulled", r.stderr


def test_known_layers_are_not_downloaded_again(cli, registry, seeded, env, root: Path) -> None:
    _login(cli, registry, env)
    r = cli("pull", seeded["oci"], env=env)
    assert r.returncode == 0 and "1 layer(s) downloaded" in r.stdout, r.stderr
    layers = sorted(p.name for p in (root / "layers").iterdir())
    r = cli("pull", seeded["oci"], env=env)
    assert r.returncode == 0 and "0 layer(s) downloaded, 1 already present" in r.stdout, r.stdout
    assert "already present" in r.stdout
    # the Docker schema 2 copy has the same (gzip) layer blob: nothing to fetch either
    r = cli("pull", seeded["v2s2"], env=env)
    assert r.returncode == 0 and "0 layer(s) downloaded" in r.stdout, r.stdout
    assert sorted(p.name for p in (root / "layers").iterdir()) == layers


def _other_arch() -> str:
    return "arm64" if oci.host_arch() == "amd64" else "amd64"


@pytest.fixture(scope="module")
def two_platforms(registry: Registry, module_podman, fixture_image, tmp_path_factory) -> str:
    """An OCI image index with two platforms (this host's and another),
    pushed with ``skopeo copy --all``."""
    d = tmp_path_factory.mktemp("multi") / "layout"
    with tarfile.open(fixture_image("busybox")) as tf:
        tf.extractall(d, filter="data")
    blobs = d / "blobs" / "sha256"
    desc = json.loads((d / "index.json").read_text())["manifests"][0]
    manifest = json.loads((blobs / desc["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())

    def put(data: bytes) -> dict:
        digest = oci.sha256_bytes(data)
        (blobs / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    config["architecture"] = _other_arch()
    other_cfg = put(json.dumps(config).encode())
    other = dict(manifest, config=dict(manifest["config"], **other_cfg))
    entries = []
    for arch, m in ((oci.host_arch(), manifest), (_other_arch(), other)):
        entries.append({"mediaType": oci.OCI_MANIFEST, **put(json.dumps(m).encode()),
                        "platform": {"os": "linux", "architecture": arch}})
    index = put(json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                            "manifests": entries}).encode())
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": oci.OCI_INDEX, **index,
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    registry.skopeo_copy(module_podman, f"oci:{d}:multi", "multi/busybox:1", "--all")
    return registry.ref("multi/busybox:1")


def test_index_picks_the_platform(cli, registry, two_platforms, env, module_podman) -> None:
    index = _manifest(module_podman, registry, two_platforms)
    assert index["mediaType"] == oci.OCI_INDEX and len(index["manifests"]) == 2
    _login(cli, registry, env)
    r = cli("pull", two_platforms, env=env)
    assert r.returncode == 0, r.stderr
    [img] = _ls(cli)
    data = json.loads(cli("image", "inspect", two_platforms, "--json").stdout)
    assert data["Architecture"] == oci.host_arch()
    assert data["ManifestDigest"] == index["manifests"][0]["digest"]
    index_digest = r.stdout.split("Digest: ")[1].split()[0]
    assert img["RepoDigests"] == [f"{two_platforms.rsplit(':', 1)[0]}@{index_digest}"]
    # --platform: the other one (it shares the layer: nothing downloaded)
    r = cli("pull", "--platform", f"linux/{_other_arch()}", two_platforms, env=env)
    assert r.returncode == 0 and "0 layer(s) downloaded" in r.stdout, r.stderr
    data = json.loads(cli("image", "inspect", two_platforms, "--json").stdout)
    assert data["Architecture"] == _other_arch()
    assert data["ManifestDigest"] == index["manifests"][1]["digest"]


def test_index_without_the_platform(cli, registry, two_platforms, env, root: Path) -> None:
    _login(cli, registry, env)
    r = cli("pull", "--platform", "linux/s390x", two_platforms, env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "no image for linux/s390x" in r.stderr and _other_arch() in r.stderr
    assert _ls(cli) == []


def test_pull_by_digest(cli, registry, seeded, env) -> None:
    _login(cli, registry, env)
    digest = cli("pull", seeded["oci"], env=env).stdout.split("Digest: ")[1].split()[0]
    assert cli("image", "rm", seeded["oci"]).returncode == 0
    by_digest = f"{seeded['oci'].rsplit(':', 1)[0]}@{digest}"
    r = cli("pull", by_digest, env=env)
    assert r.returncode == 0, r.stderr
    [img] = _ls(cli)
    assert img["RepoTags"] == [] and img["RepoDigests"] == [by_digest]
    r = cli("pull", f"{seeded['oci'].rsplit(':', 1)[0]}@sha256:{'0' * 64}", env=env)
    assert r.returncode == 2 and "not found" in r.stderr, r.stderr


def test_tls_verify_false_only_when_asked(cli, registry, seeded, env, tmp_path: Path) -> None:
    _login(cli, registry, env)
    env = dict(env, VOLMERGE_CERTS_D=str(tmp_path / "no-certs.d"))
    r = cli("pull", seeded["oci"], env=env)
    assert r.returncode == 2 and "not trusted" in r.stderr, r.stderr
    r = cli("pull", "--tls-verify=false", seeded["oci"], env=env)
    assert r.returncode == 0, r.stderr
    # --cert-dir names the host's own directory
    r = cli("pull", "--cert-dir", str(registry.cert_dir), seeded["v2s2"], env=env)
    assert r.returncode == 0, r.stderr


def test_plain_pull_takes_the_fast_path(cli, registry, seeded, env, root: Path) -> None:
    """A plain ``pull`` runs without typer (cli/fastpull.py), and the modules
    it defers load when used: the summary line is the typer command's."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom volmerge.cli import main\n"
            f"code = main(['pull', {seeded['oci']!r}])\n"
            "print(code, 'typer' in sys.modules, type(sys.modules['zstandard']).__name__,"
            " sys.modules.get('h2', 'absent'))")
    _login(cli, registry, env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, VOLMERGE_ROOT=str(root), **env), timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # zstandard not loaded (no zstd in this pull); h2 marked absent: a pull speaks HTTP/1.1
    assert lines[-1] == "0 False _Deferred None", out.stdout
    assert lines[-2].startswith(f"Pulled: {seeded['oci']} (image "), out.stdout
    assert "1 layer(s) downloaded, 0 already present" in lines[-2]


def test_blob_bodies_go_over_http11(registry, seeded) -> None:
    """Small requests over HTTP/2 (a push's: several at a time on one
    connection), a layer's body over HTTP/1.1 (registry/transport.py: h2's
    per-frame work made a download cost twice the CPU); a pull's session
    speaks HTTP/1.1 alone, on one pool."""
    from volmerge.runtime.registry import manifests, reference
    from volmerge.runtime.registry.auth import Credentials
    from volmerge.runtime.registry.transport import Session, TlsOptions

    from .server import PASSWORD, USER

    r = reference.parse(seeded["oci"])
    scope = f"repository:{r.repository}:pull"
    tls = TlsOptions(cert_dir=str(registry.cert_dir))
    with Session(r.registry, r.api_host, creds=Credentials(USER, PASSWORD), tls=tls) as s:
        m = manifests.fetch(s, r.repository, r.reference, scope, "manifest")
        (cdigest, _csize), layers = manifests.check_manifest(m, "manifest")
        path = f"/v2/{r.repository}/blobs/{layers[0].digest}"
        with s.stream("GET", f"/v2/{r.repository}/blobs/{cdigest}", scope) as small:
            assert small.status_code == 200 and small.http_version == "HTTP/2"
        with s.stream("GET", path, scope, bulk=True) as big:
            assert big.status_code == 200 and big.http_version == "HTTP/1.1"
            assert len(big.read()) == layers[0].size
    with Session(r.registry, r.api_host, creds=Credentials(USER, PASSWORD), tls=tls,
                 http2=False) as s:
        assert s.bulk() is s.client
        m = manifests.fetch(s, r.repository, r.reference, scope, "manifest")
        with s.stream("GET", f"/v2/{r.repository}/blobs/{cdigest}", scope) as small:
            assert small.status_code == 200 and small.http_version == "HTTP/1.1"
        with s.stream("GET", path, scope, bulk=True) as big:
            assert big.http_version == "HTTP/1.1" and len(big.read()) == layers[0].size


def test_a_download_takes_the_http11_client(registry, seeded, tmp_path: Path) -> None:
    import threading

    from volmerge.runtime.registry import manifests, reference
    from volmerge.runtime.registry.auth import Credentials
    from volmerge.runtime.registry.blobs import Download
    from volmerge.runtime.registry.transport import Session, TlsOptions

    from .server import PASSWORD, USER

    r = reference.parse(seeded["oci"])
    scope = f"repository:{r.repository}:pull"
    tls = TlsOptions(cert_dir=str(registry.cert_dir))
    with Session(r.registry, r.api_host, creds=Credentials(USER, PASSWORD), tls=tls) as s:
        m = manifests.fetch(s, r.repository, r.reference, scope, "manifest")
        _config, [layer, *_] = manifests.check_manifest(m, "manifest")
        seen: list[str] = []
        bulk = s.bulk()
        bulk.event_hooks["response"].append(lambda resp: seen.append(resp.http_version))
        Download(s, r.repository, scope, layer.digest, layer.size, tmp_path / "blob",
                 lambda *_a: None, threading.Event()).run()
        assert seen == ["HTTP/1.1"]
        assert (tmp_path / "blob").stat().st_size == layer.size


def test_a_config_the_store_has_is_not_fetched(cli, registry, env, module_podman,
                                               tmp_path: Path) -> None:
    """Another tag of an image the store has: its config is read from the
    store (hashed again), not downloaded — here the registry's copy is
    spoilt after the first pull, and the second pull does not notice."""
    layer = layer_tar([E("etc", "dir"), E("etc/cfg-test", data=b"only here\n")])
    archive = write_tar(image_files([layer], compression="gzip", ref=None),
                        tmp_path / "cfg.tar")
    one = _seed(registry, module_podman, archive, "cfg/app:1")
    two = _seed(registry, module_podman, archive, "cfg/app:2")
    _login(cli, registry, env)
    r = cli("pull", "-q", one, env=env)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    blob = registry.blob_data(image_id)       # the config's digest is the image id
    blob.write_bytes(b"x" * blob.stat().st_size)
    r = cli("pull", "-q", two, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == image_id
    assert sorted(t for i in _ls(cli) for t in i["RepoTags"]) == [one, two]


def test_a_spoilt_stored_config_is_fetched_again(cli, registry, env, module_podman, root: Path,
                                                 tmp_path: Path) -> None:
    """The store's copy is hashed before it is used: a spoilt one is ignored
    and the registry's (verified) taken."""
    layer = layer_tar([E("etc", "dir"), E("etc/cfg-test-2", data=b"only here too\n")])
    archive = write_tar(image_files([layer], compression="gzip", ref=None),
                        tmp_path / "cfg2.tar")
    one = _seed(registry, module_podman, archive, "cfg2/app:1")
    two = _seed(registry, module_podman, archive, "cfg2/app:2")
    _login(cli, registry, env)
    r = cli("pull", "-q", one, env=env)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    stored = root / "blobs" / "sha256" / image_id[7:]
    size = stored.stat().st_size
    stored.write_bytes(b"{" + b" " * (size - 2) + b"}")
    r = cli("pull", "-q", two, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == image_id
    r = cli("image", "inspect", "--json", two)
    assert r.returncode == 0 and image_id[7:19] in r.stdout, r.stderr
