"""Registry credentials and auth challenges.

Credentials live where podman, buildah and skopeo keep them
(containers-auth.json(5)), so an operator's ``podman login`` works here and
ours works there: ``{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}``.
The file written is ``$REGISTRY_AUTH_FILE``, else
``$XDG_RUNTIME_DIR/containers/auth.json``, else podman's fallback
``/run/containers/<uid>/auth.json``.  Reading falls back to
``$XDG_CONFIG_HOME/containers/auth.json`` and ``~/.docker/config.json``,
which are never written.  Other keys of the file (``credHelpers``, other
registries) are kept as they are.

Credential helpers are run as podman and Docker run them: in each file, a
``credHelpers`` entry for the registry (else the file's ``credsStore``)
names ``docker-credential-NAME``, run as ``NAME get`` with the registry on
stdin; its answer (``{"Username": ..., "Secret": ...}``) wins over the
file's ``auths``.  "Not found" from the helper falls through to the
``auths`` entries and the next file; a helper that is missing, fails or
answers garbage is one line of bad input.

A 401's ``WWW-Authenticate`` header is either ``Basic realm=...`` (send the
credentials) or ``Bearer realm=...,service=...,scope=...`` (ask the realm
for a token, with the credentials if there are any, and send the token):
the Docker token flow that distribution and every public registry use.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..atomicfile import atomic_write
from ..errors import BadInput
from .reference import DOCKER_HUB

_DOCKER_HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io",
                    "registry-1.docker.io")
_MAX_FILE = 4 << 20


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def primary_auth_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file ``login`` writes and ``logout`` edits."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def _read_only_files() -> list[Path]:
    home = Path(os.environ.get("HOME") or os.path.expanduser("~"))
    cfg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [cfg / "containers" / "auth.json", home / ".docker" / "config.json"]


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BadInput(f"cannot read credentials file {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise BadInput(f"credentials file {path} is too large")
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"credentials file {path} is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise BadInput(f"credentials file {path} has no \"auths\" object")
    return doc


def _keys(registry: str, repository: str | None) -> list[str]:
    """Most specific first: ``host/ns/repo``, ``host/ns``, ``host`` (podman's rule)."""
    keys = []
    if repository:
        parts = repository.split("/")
        for n in range(len(parts), 0, -1):
            keys.append(f"{registry}/{'/'.join(parts[:n])}")
    keys.append(registry)
    if registry == DOCKER_HUB:
        keys += list(_DOCKER_HUB_KEYS[1:])
    return keys


def _decode(entry: object, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    raw = entry.get("auth")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        user, sep, password = base64.b64decode(raw, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"credentials file {path}: the entry for {key} is not base64 user:password") from None
    if not sep:
        raise BadInput(f"credentials file {path}: the entry for {key} has no ':'")
    return Credentials(user, password)


def find_credentials(registry: str, repository: str | None = None,
                     authfile: str | os.PathLike[str] | None = None) -> Credentials | None:
    """The credentials for ``registry`` (and ``repository``), or None (anonymous)."""
    files = [primary_auth_file(authfile)]
    if not authfile:
        files += _read_only_files()
    for path in files:
        doc = _load(path)
        helper = _helper_name(doc, registry, path)
        if helper is not None:
            creds = helper_get(helper, registry, path)
            if creds is not None:
                return creds
        auths = doc.get("auths") or {}
        for key in _keys(registry, repository):
            creds = _decode(auths.get(key), path, key)
            if creds is not None:
                return creds
    return None


# -- credential helpers ----------------------------------------------------------------

_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HELPER_TIMEOUT = 30.0
_NOT_FOUND = "credentials not found"


def _helper_name(doc: dict, registry: str, path: Path) -> str | None:
    """``credHelpers[registry]`` (any of Docker Hub's names for it), else ``credsStore``."""
    helpers = doc.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise BadInput(f"credentials file {path}: \"credHelpers\" is not an object")
    keys = [registry] + (list(_DOCKER_HUB_KEYS) if registry == DOCKER_HUB else [])
    name = next((helpers[k] for k in keys if k in helpers), None) or doc.get("credsStore")
    if name is None or name == "":
        return None
    if not isinstance(name, str) or not _HELPER_NAME.match(name):
        raise BadInput(f"credentials file {path}: bad credential helper name {name!r}")
    return name


def _server_url(registry: str) -> str:
    """What the helper is asked for: Docker's key for Docker Hub, else HOST[:PORT]."""
    return _DOCKER_HUB_KEYS[1] if registry == DOCKER_HUB else registry


def helper_get(name: str, registry: str, path: Path | None = None) -> Credentials | None:
    """``docker-credential-NAME get`` for ``registry``: its credentials, or
    None when it has none for it."""
    import subprocess  # only for a helper: not on every pull's path

    prog = f"docker-credential-{name}"
    where = f" (named in {path})" if path else ""
    exe = shutil.which(prog)
    if exe is None:
        raise BadInput(f"credential helper {prog}{where} is not installed (not on PATH)")
    try:
        p = subprocess.run([exe, "get"], input=_server_url(registry), capture_output=True,
                           text=True, timeout=_HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BadInput(f"credential helper {prog} did not answer in "
                       f"{_HELPER_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise BadInput(f"credential helper {prog} cannot run: {exc.strerror or exc}") from None
    said = " ".join((p.stdout.strip() or p.stderr.strip()).split())[:200]
    if p.returncode != 0:
        if _NOT_FOUND in said.lower():
            return None
        raise BadInput(f"credential helper {prog} failed for {registry} "
                       f"(exit {p.returncode}): {said or 'no message'}")
    try:
        doc = json.loads(p.stdout)
        user, secret = doc.get("Username"), doc.get("Secret")
    except (ValueError, AttributeError):
        raise BadInput(f"credential helper {prog} did not answer JSON for {registry}") from None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        raise BadInput(f"credential helper {prog} gave no Username/Secret for {registry}")
    if user == "<token>":
        raise BadInput(f"credential helper {prog} gave an identity token for {registry};"
                       " identity tokens are not supported")
    return Credentials(user, secret)


def store_credentials(registry: str, creds: Credentials,
                      authfile: str | os.PathLike[str] | None = None) -> Path:
    """Write (or replace) the entry of ``registry``; the file is 0600, written new and renamed."""
    path = primary_auth_file(authfile)
    doc = _load(path)
    auths = doc.setdefault("auths", {})
    auths[registry] = {"auth": creds.basic()[len("Basic "):]}
    _write(path, doc)
    return path


def remove_credentials(registry: str | None,
                       authfile: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the entry of ``registry`` (every entry when None); the keys removed."""
    path = primary_auth_file(authfile)
    doc = _load(path)
    auths = doc.get("auths") or {}
    if registry is None:
        gone = sorted(auths)
    else:
        gone = [k for k in auths if k == registry or k.startswith(registry + "/")]
    if not gone:
        return []
    for k in gone:
        del auths[k]
    doc["auths"] = auths
    _write(path, doc)
    return gone


def _write(path: Path, doc: dict) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, json.dumps(doc, indent="\t") + "\n", mode=0o600)
    except OSError as exc:
        raise BadInput(f"cannot write credentials file {path}: {exc.strerror or exc}") from None


# -- challenges ------------------------------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str                  # "basic" | "bearer" | anything else (refused)
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="reg",scope="repository:x:pull"``."""
    scheme, _sp, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)
