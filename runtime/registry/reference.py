"""Image references of a registry: ``[registry/]name[:tag][@sha256:...]``.

Normalised as Docker and podman do: a first component with a dot or a
colon, or ``localhost``, is the registry; otherwise the image lives on
``docker.io`` (and a one-component name under ``library/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadInput

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$"
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    """One image in one registry: the tag or digest it is asked for by."""

    registry: str            # host[:port] as the user wrote it (auth.json key, certs.d dir)
    repository: str          # path inside the registry, e.g. library/busybox
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Where the API answers (Docker Hub's API has a host of its own)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``: the local repository name."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest is fetched by: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def local_tag(self) -> str | None:
        """The name the pulled image gets in the store (none when pulled by digest only)."""
        if self.tag is None and self.digest is not None:
            return None
        return f"{self.name}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse(ref: str) -> Reference:
    """Parse ``ref``; BadInput if it is not a valid image reference."""
    if not isinstance(ref, str) or not ref or ref != ref.strip() or len(ref) > 512:
        raise BadInput(f"invalid image reference {ref!r}")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise BadInput(f"invalid image reference {ref!r}: bad digest {digest!r} (sha256 only)")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise BadInput(f"invalid image reference {ref!r}: bad tag {tag!r}")
    parts = rest.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"
                           or first.startswith("[")):
        registry, path = first, parts[1:]
        if not _HOST.fullmatch(registry):
            raise BadInput(f"invalid image reference {ref!r}: bad registry {registry!r}")
    else:
        registry, path = DOCKER_HUB, parts
        if len(path) == 1:
            path = ["library", *path]
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if not path or not all(_COMPONENT.fullmatch(p) for p in path):
        raise BadInput(f"invalid image reference {ref!r}: bad repository name {'/'.join(path)!r}")
    repository = "/".join(path)
    if len(registry) + 1 + len(repository) > 255:
        raise BadInput(f"invalid image reference {ref!r}: name too long")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def parse_registry(value: str) -> str:
    """A registry as ``login``/``logout`` take it: ``host[:port]``, a scheme
    and a trailing ``/`` are tolerated; Docker Hub's aliases become docker.io."""
    v = value.strip() if isinstance(value, str) else ""
    for scheme in ("https://", "http://"):
        if v.startswith(scheme):
            v = v[len(scheme):]
    v = v.rstrip("/")
    if v.endswith("/v1") or v.endswith("/v2"):
        v = v[:-3]
    if v in ("index.docker.io", "registry-1.docker.io"):
        v = DOCKER_HUB
    if not v or not _HOST.fullmatch(v):
        raise BadInput(f"invalid registry {value!r}: expected HOST[:PORT]")
    return v
