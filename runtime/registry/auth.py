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
        auths = _load(path).get("auths") or {}
        for key in _keys(registry, repository):
            creds = _decode(auths.get(key), path, key)
            if creds is not None:
                return creds
    return None


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
