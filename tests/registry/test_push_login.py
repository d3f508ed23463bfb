"""`volmerge push` read back by podman, and `login` / `logout` sharing the
auth.json that podman and skopeo use (a real registry with an htpasswd user)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .server import PASSWORD, USER, Registry

IMG = "localhost/volmerge-fixture/busybox:latest"


def test_push_then_podman_pulls_and_runs(cli, registry: Registry, env, podman,
                                         fixture_image) -> None:
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    image_id = json.loads(cli("image", "inspect", IMG, "--json").stdout)["Id"]
    r = cli("login", "-u", USER, "--password-stdin", registry.host, input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    dest = registry.ref("pushed/busybox:1")
    r = cli("push", IMG, dest, env=env)
    assert r.returncode == 0, r.stderr
    assert "2 blob(s) uploaded" in r.stdout and "pushed" in r.stdout
    manifest_digest = json.loads(cli("image", "inspect", IMG, "--json").stdout)["ManifestDigest"]
    assert r.stdout.split("Digest: ")[1].split()[0] == manifest_digest          # the registry serves our bytes
    # a second push uploads nothing
    r = cli("push", IMG, dest, env=env)
    assert r.returncode == 0 and "0 blob(s) uploaded, 2 already there" in r.stdout, r.stdout
    # podman pulls it (with the credentials volmerge stored) and gets the same image
    podman("pull", "--cert-dir", str(registry.cert_dir), "--authfile", env["REGISTRY_AUTH_FILE"],
           dest)
    got = podman("image", "inspect", dest, "--format", "{{.Id}}").stdout.strip()
    assert "sha256:" + got.removeprefix("sha256:") == image_id
    assert podman.run(dest, "/bin/busybox", "echo", "from-volmerge").stdout.strip() == "from-volmerge"


def test_login_writes_podmans_auth_json_and_logout_removes(cli, registry: Registry,
                                                           tmp_path: Path, podman) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {"other.example:5000": {"auth": "eDp5"}},
                                    "credHelpers": {"x.example": "pass"}}))
    env = {"VOLMERGE_CERTS_D": str(registry.certs_d), "REGISTRY_AUTH_FILE": str(authfile)}
    # a wrong password: refused, nothing written
    before = authfile.read_bytes()
    r = cli("login", "-u", USER, "--password-stdin", registry.host, input="wrong\n", env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "refused" in r.stderr and authfile.read_bytes() == before
    r = cli("login", "-u", USER, "--password-stdin", registry.host, input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(authfile.read_text())
    assert base64.b64decode(doc["auths"][registry.host]["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert doc["auths"]["other.example:5000"] == {"auth": "eDp5"}     # kept
    assert doc["credHelpers"] == {"x.example": "pass"}
    assert authfile.stat().st_mode & 0o777 == 0o600
    # podman sees the login
    r = podman("login", "--get-login", "--authfile", str(authfile), registry.host)
    assert r.stdout.strip() == USER
    r = cli("logout", registry.host, env=env)
    assert r.returncode == 0 and registry.host in r.stdout, r.stderr
    assert registry.host not in json.loads(authfile.read_text())["auths"]
    r = cli("logout", registry.host, env=env)
    assert r.returncode == 2 and "not logged in" in r.stderr


def test_podman_login_works_for_volmerge(cli, registry: Registry, tmp_path: Path, podman,
                                         module_podman, fixture_image) -> None:
    """An operator's existing `podman login` is enough for `volmerge pull`."""
    registry.skopeo_copy(module_podman, f"oci-archive:{fixture_image('busybox')}", "op/bb:1")
    authfile = tmp_path / "podman-auth.json"
    podman("login", "--authfile", str(authfile), "--cert-dir", str(registry.cert_dir),
           "-u", USER, "--password-stdin", registry.host, input=PASSWORD + "\n")
    env = {"VOLMERGE_CERTS_D": str(registry.certs_d), "REGISTRY_AUTH_FILE": str(authfile)}
    r = cli("pull", registry.ref("op/bb:1"), env=env)
    assert r.returncode == 0, r.stderr


def test_docker_config_is_read_but_never_written(cli, registry: Registry, tmp_path: Path,
                                                 module_podman, fixture_image) -> None:
    registry.skopeo_copy(module_podman, f"oci-archive:{fixture_image('busybox')}", "dk/bb:1")
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    cfg = home / ".docker" / "config.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    cfg.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    env = {"VOLMERGE_CERTS_D": str(registry.certs_d), "HOME": str(home),
           "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_CONFIG_HOME": str(home / ".config")}
    r = cli("pull", registry.ref("dk/bb:1"), env=env)
    assert r.returncode == 0, r.stderr
    r = cli("logout", "--all", env=env)
    assert r.returncode == 0 and json.loads(cfg.read_text())["auths"][registry.host]
