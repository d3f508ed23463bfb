"""Pure functions of the registry client: references, challenges, the
credentials file, platform choice, manifest checks (no root, no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from volmerge.runtime import oci
from volmerge.runtime.errors import BadInput
from volmerge.runtime.registry import auth, manifests, reference

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.mark.parametrize("ref, want", [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("me/app:1", ("docker.io", "me/app", "1", None)),
    ("index.docker.io/library/x", ("docker.io", "library/x", "latest", None)),
    ("127.0.0.1:5000/a/b:v2", ("127.0.0.1:5000", "a/b", "v2", None)),
    ("localhost/app", ("localhost", "app", "latest", None)),
    ("reg.example/app@sha256:" + "a" * 64, ("reg.example", "app", None, "sha256:" + "a" * 64)),
    ("reg.example/app:1@sha256:" + "b" * 64, ("reg.example", "app", "1", "sha256:" + "b" * 64)),
])
def test_reference_parse(ref: str, want: tuple) -> None:
    r = reference.parse(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == want


def test_reference_names() -> None:
    r = reference.parse("busybox")
    assert r.api_host == "registry-1.docker.io" and r.local_tag == "docker.io/library/busybox:latest"
    assert reference.parse("reg.example/a@sha256:" + "c" * 64).local_tag is None


@pytest.mark.parametrize("bad", ["", " x", "UP/x", "x:bad tag", "reg.example/a@md5:00",
                                 "reg.example/a@sha256:xyz", "a//b", "-x/y"])
def test_reference_refuses(bad: str) -> None:
    with pytest.raises(BadInput):
        reference.parse(bad)


def test_parse_registry() -> None:
    assert reference.parse_registry("https://reg.example:5000/") == "reg.example:5000"
    assert reference.parse_registry("index.docker.io") == "docker.io"
    with pytest.raises(BadInput):
        reference.parse_registry("a b")


def test_challenges() -> None:
    ch = auth.parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                              'scope="repository:a/b:pull,push"')
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example/token", "service": "reg",
                         "scope": "repository:a/b:pull,push"}
    assert auth.parse_challenge('Basic realm="x"') == auth.Challenge("basic", {"realm": "x"})


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_credentials_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert auth.find_credentials("reg.example") is None
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "reg.example": {"auth": _b64("docker:1")},
        "https://index.docker.io/v1/": {"auth": _b64("hub:2")}}}))
    assert auth.find_credentials("reg.example") == auth.Credentials("docker", "1")
    assert auth.find_credentials("docker.io", "library/x") == auth.Credentials("hub", "2")
    primary = auth.store_credentials("reg.example", auth.Credentials("podman", "3"))
    assert primary == tmp_path / "run" / "containers" / "auth.json"
    assert auth.find_credentials("reg.example") == auth.Credentials("podman", "3")
    doc = json.loads(primary.read_text())
    doc["auths"]["reg.example/team"] = {"auth": _b64("team:4")}
    primary.write_text(json.dumps(doc))
    assert auth.find_credentials("reg.example", "team/app") == auth.Credentials("team", "4")
    assert auth.find_credentials("reg.example", "other/app") == auth.Credentials("podman", "3")
    assert auth.remove_credentials("reg.example") == ["reg.example", "reg.example/team"]
    assert auth.find_credentials("reg.example") == auth.Credentials("docker", "1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "explicit.json"))
    assert auth.primary_auth_file() == tmp_path / "explicit.json"


def test_credentials_file_garbage(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        auth.find_credentials("reg.example", authfile=f)
    f.write_text(json.dumps({"auths": {"reg.example": {"auth": "!!!"}}}))
    with pytest.raises(BadInput, match="base64"):
        auth.find_credentials("reg.example", authfile=f)


def _index(*platforms: tuple[str, str, str | None]) -> manifests.Fetched:
    entries = [{"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + f"{i:x}" * 64, "size": 10,
                "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})}}
               for i, (o, a, v) in enumerate(platforms)]
    doc = {"schemaVersion": 2, "manifests": entries}
    return manifests.Fetched(b"", "sha256:" + "f" * 64, oci.OCI_INDEX, doc)


def test_choose_platform() -> None:
    idx = _index(("unknown", "unknown", None), ("linux", "amd64", None),
                 ("linux", "arm64", "v8"), ("linux", "arm", "v7"))
    assert manifests.choose(idx, manifests.parse_platform("linux/amd64"), "i")["digest"] == \
        "sha256:" + "1" * 64
    assert manifests.choose(idx, manifests.parse_platform("linux/arm64"), "i")["digest"] == \
        "sha256:" + "2" * 64
    assert manifests.choose(idx, manifests.parse_platform("linux/arm/v7"), "i")["digest"] == \
        "sha256:" + "3" * 64
    with pytest.raises(BadInput, match="linux/amd64, linux/arm64/v8, linux/arm/v7"):
        manifests.choose(idx, manifests.parse_platform("linux/riscv64"), "i")
    with pytest.raises(BadInput):
        manifests.parse_platform("linux")


def _manifest(**over: object) -> manifests.Fetched:
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
           "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "a" * 64, "size": 5},
           "layers": [{"mediaType": oci.OCI_LAYER + "+gzip", "digest": "sha256:" + "b" * 64,
                       "size": 7}]}
    doc.update(over)
    return manifests.Fetched(b"", "sha256:" + "c" * 64, oci.OCI_MANIFEST, doc)


def test_check_manifest() -> None:
    (cd, cs), layers = manifests.check_manifest(_manifest(), "m")
    assert cd == "sha256:" + "a" * 64 and cs == 5 and layers[0].size == 7
    for over, says in (
        ({"layers": [{"mediaType": "application/x-evil", "digest": "sha256:" + "b" * 64,
                      "size": 1}]}, "unsupported media type"),
        ({"layers": [{"mediaType": oci.OCI_LAYER, "digest": "sha256:../../x", "size": 1}]},
         "invalid"),
        ({"layers": [{"mediaType": oci.OCI_LAYER, "digest": "sha256:" + "b" * 64, "size": -1}]},
         "invalid size"),
        ({"layers": [{"mediaType": oci.OCI_LAYER, "digest": "sha256:" + "b" * 64, "size": 1,
                      "urls": ["http://elsewhere"]}]}, "foreign"),
        ({"config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "a" * 64,
                     "size": 1 << 30}}, "too large"),
    ):
        with pytest.raises(BadInput, match=says):
            manifests.check_manifest(_manifest(**over), "m")


def test_a_follower_that_finds_the_blob_gone_waits_for_the_download_to_end(tmp_path: Path) -> None:
    """The download verified the last bytes, found a digest mismatch and
    removed its file; a follower opening it only now must let the download
    end (under the shared lock) before it raises the download's error: it
    used to wait for the download holding that lock (a pull that hung)."""
    import threading
    from concurrent.futures import Future

    from volmerge.runtime.registry.blobs import Download, Follower

    no_session = None  # never asked: every byte has arrived
    dl = Download(no_session, "r", "s", "sha256:" + "0" * 64, 4,  # type: ignore[arg-type]
                  tmp_path / "blob", lambda *a: None, threading.Event())
    dl.opened, dl.got = True, 4  # every byte arrived; the .part file is gone
    fut: Future[object] = Future()
    waiting = threading.Event()

    def done() -> object:
        waiting.set()
        return fut.result()

    def download_ends() -> None:  # what Download.run's mismatch path does after the unlink
        waiting.wait(0.5)  # the follower waits for it (it holds the lock, before the fix)
        with dl.cond:
            dl.ended = True
            dl.cond.notify_all()
        fut.set_exception(BadInput("digest mismatch for the blob"))

    errors: list[BaseException] = []

    def follow() -> None:
        try:
            Follower(dl, done).readinto(memoryview(bytearray(4)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    threading.Thread(target=download_ends, daemon=True).start()
    reader.join(10)
    assert not reader.is_alive(), "the follower and the download wait for each other"
    assert len(errors) == 1 and "digest mismatch" in str(errors[0])
