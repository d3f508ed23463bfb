"""Against the real registry (distribution 2.8, htpasswd): cross-repository
blob mount on push, with its fallback to an upload; and credential helpers
(``credHelpers`` / ``credsStore``) run as podman and Docker run them, with a
helper script the test puts on PATH."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from .server import PASSWORD, USER, Registry

IMG = "localhost/volmerge-fixture/busybox:latest"


def _helper(d: Path, name: str, body: str) -> dict[str, str]:
    """``docker-credential-NAME`` in ``d``; the PATH that finds it first."""
    d.mkdir(exist_ok=True)
    prog = d / f"docker-credential-{name}"
    prog.write_text("#!/bin/sh\n" + body)
    prog.chmod(0o755)
    return {"PATH": f"{d}:{os.environ['PATH']}"}


def _good_helper(d: Path, registry: Registry) -> dict[str, str]:
    """Answers ``get`` for the registry (recording what it was asked), not found otherwise."""
    log = d / "asked"
    return _helper(d, "vmtest", f"""[ "$1" = get ] || exit 3
read -r server
echo "$server" >> {log}
if [ "$server" = "{registry.host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\\n' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
""")


def _refused(r, code: int, says: str) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volmerge: error: "), r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_push_mounts_blobs_from_a_repository_that_has_them(cli, registry: Registry, env, root,
                                                           fixture_image) -> None:
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    r = cli("login", "-u", USER, "--password-stdin", registry.host, input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    r = cli("push", IMG, registry.ref("mnt/a:1"), env=env)
    assert r.returncode == 0 and "2 blob(s) uploaded" in r.stdout, r.stdout
    # the store remembers where it pushed: another repository gets both blobs by mount
    r = cli("push", IMG, registry.ref("mnt/b:1"), env=env)
    assert r.returncode == 0, r.stderr
    assert "0 blob(s) uploaded, 2 mounted, 0 already there" in r.stdout, r.stdout
    assert r.stdout.count("mounted from another repository") == 2
    # the mounted blobs are really there: podman-free check through our own pull
    cli("image", "rm", IMG)
    r = cli("pull", "-q", registry.ref("mnt/b:1"), env=env)
    assert r.returncode == 0, r.stderr
    # a stale source (the registry lost mnt/a's link to a blob, the cache still
    # names it): the registry opens an upload instead, and the blob is uploaded
    links = registry.storage / "docker/registry/v2/repositories/mnt"
    for repo in ("a", "b"):
        shutil.rmtree(links / repo / "_layers")
    r = cli("push", registry.ref("mnt/b:1"), registry.ref("mnt/c:1"), env=env)
    assert r.returncode == 0, r.stderr
    assert "2 blob(s) uploaded" in r.stdout and "mounted" not in r.stdout, r.stdout
    assert json.loads((root / "registry" / "blob-repos.json").read_text())


def test_credential_helper_answers_for_the_registry(cli, registry: Registry, tmp_path: Path,
                                                   fixture_image) -> None:
    """credHelpers in auth.json, then credsStore in ~/.docker/config.json: the
    helper's credentials push and pull; the registry is what it is asked."""
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    hdir = tmp_path / "bin"
    path_env = _good_helper(hdir, registry)
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {}, "credHelpers": {registry.host: "vmtest"}}))
    env = {"VOLMERGE_CERTS_D": str(registry.certs_d), "REGISTRY_AUTH_FILE": str(authfile),
           **path_env}
    r = cli("push", "-q", IMG, registry.ref("helper/bb:1"), env=env)
    assert r.returncode == 0, r.stderr
    assert (hdir / "asked").read_text().split() == [registry.host]
    # Docker's file: credsStore for every registry; no auth.json of podman's
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"credsStore": "vmtest"}))
    env2 = {"VOLMERGE_CERTS_D": str(registry.certs_d), "HOME": str(home),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_CONFIG_HOME": str(home / ".config"),
            **path_env}
    r = cli("pull", "-q", registry.ref("helper/bb:1"), env=env2)
    assert r.returncode == 0, r.stderr
    # a helper with nothing for the registry falls through to the file's auths
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}},
                                    "credsStore": "nothing"}))
    env3 = {**env, **_helper(hdir, "nothing", 'echo "credentials not found in native keychain"\n'
                                              "exit 1\n")}
    r = cli("pull", "-q", registry.ref("helper/bb:1"), env=env3)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["missing", "failing", "garbage", "bad-name"])
def test_credential_helper_bad(cli, registry: Registry, tmp_path: Path, case: str) -> None:
    """Missing, failing, garbage-answering or badly named helper: one line, exit 2."""
    hdir = tmp_path / "bin"
    env = {"VOLMERGE_CERTS_D": str(registry.certs_d),
           "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    name = {"missing": "absent", "failing": "broken", "garbage": "garbage",
            "bad-name": "../../bin/sh"}[case]
    if case == "failing":
        env.update(_helper(hdir, name, "echo 'keychain locked' >&2\nexit 4\n"))
    elif case == "garbage":
        env.update(_helper(hdir, name, "echo not-json\n"))
    Path(env["REGISTRY_AUTH_FILE"]).write_text(
        json.dumps({"auths": {}, "credHelpers": {registry.host: name}}))
    says = {"missing": "docker-credential-absent", "failing": "keychain locked",
            "garbage": "did not answer JSON", "bad-name": "bad credential helper name"}[case]
    r = cli("pull", registry.ref("helper/none:1"), env=env)
    _refused(r, 2, says)
    if case == "missing":
        assert "not installed" in r.stderr
    if case == "failing":
        assert "exit 4" in r.stderr
