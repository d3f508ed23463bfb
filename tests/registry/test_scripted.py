"""What a well-behaved registry will not show: a connection dropped in the
middle of a blob (the download resumes with a Range request), and the
Bearer token flow (a token server asked with the stored credentials)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.runtime.images.builders import E, config_digest, image_files, layer_tar

from .scripted import Scripted

BIG = layer_tar([E("data", "dir"), E("data/blob", data=os.urandom(3 << 20))])


@pytest.fixture
def env(tmp_path: Path, pki) -> dict[str, str]:
    return {"VOLMERGE_CERTS_D": str(pki.dir / "certs.d"),
            "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}


@pytest.fixture
def scripted(pki):
    s = Scripted(pki)
    yield s
    s.stop()


def test_interrupted_download_resumes_with_a_range(cli, scripted: Scripted, env) -> None:
    files = image_files([BIG], compression="none", ref=None)
    ref = scripted.serve_layout(files, "big/img", "1")
    layer = json.loads(files["blobs/sha256/" + json.loads(files["index.json"])["manifests"][0][
        "digest"][7:]])["layers"][0]["digest"]
    scripted.cut_once[layer] = 1 << 20                      # hang up after 1 MiB
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    gets = [(p, rng) for m, p, rng in scripted.log if m == "GET" and p.endswith(layer)]
    assert len(gets) == 2 and gets[0][1] == "", gets
    start = int(gets[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1 << 20                            # asked only for the rest
    data = json.loads(cli("image", "inspect", ref, "--json").stdout)
    assert data["Id"] == config_digest(files)
    assert os.path.getsize(Path(data["Layers"][0]["Path"]) / "data" / "blob") == 3 << 20


def test_a_layer_is_extracted_while_it_downloads(cli, scripted: Scripted, env,
                                                 root: Path) -> None:
    """The registry holds the second half of the blob back until the test
    has seen the first file of the layer extracted in the store's tmp/."""
    first, second = os.urandom(1 << 20), os.urandom(2 << 20)
    layer = layer_tar([E("a", data=first), E("b", data=second)])
    files = image_files([layer], compression="none", ref=None)
    ref = scripted.serve_layout(files, "stream/img", "1")
    digest = json.loads(files["blobs/sha256/" + json.loads(files["index.json"])["manifests"][0][
        "digest"][7:]])["layers"][0]["digest"]
    go = threading.Event()
    scripted.hold[digest] = ((3 << 20) // 2, go)
    seen = []

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not go.is_set():
            for d in (root / "tmp").glob("layer-*/diff/a") if (root / "tmp").exists() else []:
                if d.stat().st_size == len(first):
                    seen.append(d)
                    go.set()
            time.sleep(0.02)
        go.set()

    t = threading.Thread(target=watch)
    t.start()
    try:
        r = cli("pull", ref, env=env)
    finally:
        go.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert seen, "the layer was not extracted while its second half was held back"
    data = json.loads(cli("image", "inspect", ref, "--json").stdout)
    assert (Path(data["Layers"][0]["Path"]) / "b").read_bytes() == second


def test_a_registry_that_ignores_the_range_sends_it_all_again(cli, scripted: Scripted,
                                                             env) -> None:
    files = image_files([BIG], compression="none", ref=None)
    ref = scripted.serve_layout(files, "norange/img", "1")
    layer = json.loads(files["blobs/sha256/" + json.loads(files["index.json"])["manifests"][0][
        "digest"][7:]])["layers"][0]["digest"]
    scripted.cut_once[layer] = 1 << 20
    scripted.ignore_range = True
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(cli("image", "inspect", ref, "--json").stdout)["Id"] == config_digest(files)


def test_a_failing_registry_is_not_done(cli, scripted: Scripted, env, root: Path) -> None:
    """5xx on every try: exit 1 after the retries, nothing in the store."""
    ref = scripted.serve_layout(image_files([layer_tar([E("f", data=b"5xx")])], ref=None),
                                "down/img", "1")
    scripted.fail_blobs = 503
    r = cli("pull", ref, env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "gave up after 5 attempts" in r.stderr and "503" in r.stderr
    gets = [p for m, p, _r in scripted.log if m == "GET" and "/blobs/" in p]
    assert len(gets) == 5
    assert json.loads(cli("image", "ls", "--json").stdout) == []
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "layers") == []


@pytest.mark.parametrize("logged_in", [True, False])
def test_bearer_token_flow(cli, pki, env, logged_in: bool) -> None:
    s = Scripted(pki, bearer=True, user="u", password="p" if logged_in else "other")
    try:
        files = image_files([layer_tar([E("f", data=b"tok")])], ref=None)
        ref = s.serve_layout(files, "tok/img", "1")
        r = cli("login", "-u", "u", "--password-stdin", s.host, input="p\n", env=env)
        if not logged_in:   # the token server refuses u:p (it wants u:other)
            assert r.returncode == 2 and "authentication failed" in r.stderr, r.stderr
            assert not Path(env["REGISTRY_AUTH_FILE"]).exists()
            return
        assert r.returncode == 0, r.stderr
        r = cli("pull", ref, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(cli("image", "inspect", ref, "--json").stdout)["Id"] == \
            config_digest(files)
        assert s.tokens_given >= 2                         # one for login, one for the pull
    finally:
        s.stop()


def test_anonymous_bearer_token(cli, pki, env) -> None:
    """A public repository: the token server gives anonymous clients a token."""
    s = Scripted(pki, bearer=True)
    try:
        files = image_files([layer_tar([E("f", data=b"anon")])], ref=None)
        r = cli("pull", s.serve_layout(files, "pub/img", "1"), env=env)
        assert r.returncode == 0, r.stderr
    finally:
        s.stop()


def test_refused_mount_falls_back_to_an_upload(cli, scripted: Scripted, env) -> None:
    """A registry that answers the mount with an error (403) instead of
    opening an upload: the blob is uploaded, the push succeeds."""
    files = image_files([layer_tar([E("etc", "dir"), E("etc/m", data=b"m" * 999)])],
                        compression="gzip", ref=None)
    ref = scripted.serve_layout(files, "src/img", "1")
    assert cli("pull", "-q", ref, env=env).returncode == 0   # the store knows src/img has them
    scripted.blobs.clear()                                   # ... but the registry lost them
    scripted.mount_refuse = 403
    r = cli("push", ref, f"{scripted.host}/dst/img:1", env=env)
    assert r.returncode == 0, r.stderr
    assert "2 blob(s) uploaded" in r.stdout and "mounted" not in r.stdout, r.stdout
    posts = [p for m, p, _r in scripted.log if m == "POST"]
    assert sum("mount=" in p and "from=src/img" in p for p in posts) == 2, posts
    assert sum("mount=" not in p for p in posts) == 2, posts
    assert len(scripted.blobs) == 2 and "1" in scripted.manifests


def test_pull_resumes_a_download_kept_by_an_earlier_command(cli, scripted: Scripted, env,
                                                            root: Path) -> None:
    """The connection drops after 1 MiB and the registry then fails: the
    pull gives up (exit 1) keeping the bytes it had; the next pull asks only
    for the rest, and the kept file is gone once the image is in."""
    files = image_files([BIG], compression="none", ref=None)
    ref = scripted.serve_layout(files, "big/resume", "1")
    layer = json.loads(files["blobs/sha256/" + json.loads(files["index.json"])["manifests"][0][
        "digest"][7:]])["layers"][0]["digest"]
    scripted.cut_once[layer] = 1 << 20
    scripted.fail_after_cut = 503
    r = cli("pull", ref, env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    kept = root / "registry" / "partial" / f"{layer[7:]}.part"
    assert kept.stat().st_size == 1 << 20
    assert cli("image", "ls", "-q").stdout.strip() == ""
    scripted.fail_blobs = 0
    scripted.log.clear()
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    gets = [rng for m, p, rng in scripted.log if m == "GET" and p.endswith(layer)]
    assert gets == [f"bytes={1 << 20}-"], gets          # only the rest, in this command
    assert not kept.exists()
    data = json.loads(cli("image", "inspect", ref, "--json").stdout)
    assert data["Id"] == config_digest(files)
    assert os.path.getsize(Path(data["Layers"][0]["Path"]) / "data" / "blob") == 3 << 20


def test_a_bad_kept_download_is_fetched_again_whole(cli, scripted: Scripted, env,
                                                    root: Path) -> None:
    """A kept partial file whose bytes are wrong: the digest check catches it
    and the blob is downloaded once more from its start."""
    files = image_files([BIG], compression="none", ref=None)
    ref = scripted.serve_layout(files, "big/bad", "1")
    layer = json.loads(files["blobs/sha256/" + json.loads(files["index.json"])["manifests"][0][
        "digest"][7:]])["layers"][0]["digest"]
    kept = root / "registry" / "partial" / f"{layer[7:]}.part"
    assert cli("image", "ls").returncode == 0           # the store exists
    kept.parent.mkdir(parents=True, mode=0o700)
    kept.write_bytes(b"\0" * 4096)
    r = cli("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    gets = [rng for m, p, rng in scripted.log if m == "GET" and p.endswith(layer)]
    assert gets == ["bytes=4096-", ""], gets
    assert not kept.exists()
