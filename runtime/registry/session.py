"""``login`` and ``logout``: credentials checked against the registry, then stored."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from . import reference
from .auth import Credentials, primary_auth_file, remove_credentials, store_credentials
from .transport import Session, TlsOptions, retrying


def login(registry: str, username: str, password: str, *, tls: TlsOptions = TlsOptions(),
          authfile: str | os.PathLike[str] | None = None) -> Path:
    """Check ``username``/``password`` with ``GET /v2/`` (answering the
    registry's Basic or Bearer challenge with them); store them only if the
    registry accepts them.  Returns the credentials file."""
    host = reference.parse_registry(registry)
    if not username or ":" in username:
        raise BadInput("login needs a user name without ':'")
    if not password:
        raise BadInput("login needs a password")
    creds = Credentials(username, password)
    api = reference.DOCKER_HUB_API if host == reference.DOCKER_HUB else host
    what = f"login to {host}"
    with Session(host, api, creds=creds, tls=tls) as s:
        for attempt in retrying(what):
            with attempt:
                with s.stream("GET", "/v2/", "", what=what) as r:
                    if r.status_code == 401:
                        raise BadInput(f"{what} failed: the registry refused the credentials")
                    s.check(r, what)
    return store_credentials(host, creds, authfile)


def logout(registry: str | None, *, all_: bool = False,
           authfile: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the stored credentials of ``registry`` (every one with ``all_``)."""
    if all_ == (registry is not None):
        raise BadInput("logout takes a REGISTRY or --all")
    host = None if all_ else reference.parse_registry(registry or "")
    gone = remove_credentials(host, authfile)
    if not gone and not all_:
        raise BadInput(f"not logged in to {host} (no entry in {primary_auth_file(authfile)})")
    return gone
