"""HTTPS to one registry: TLS, authentication, retries, bounded reads.

httpx, with keep-alive connections.  A push's small requests (existence
checks and mounts, several at a time) go over HTTP/2, which multiplexes
them on one connection; a pull's go one after another (manifest, then
config), so a pull speaks HTTP/1.1 alone and never imports h2 (~15 ms of
every pull).  Blob bodies always go over HTTP/1.1, a connection per
transfer: h2's per-frame work in Python cost a download about twice the
CPU.
TLS trusts the system CAs plus ``certs.d/HOST:PORT/*.crt`` (the podman and
Docker convention; ``*.cert`` + ``*.key`` is a client certificate) under
``$VOLMERGE_CERTS_D`` or, by default, ``/etc/containers/certs.d`` and
``/etc/docker/certs.d``; ``--cert-dir DIR`` names the directory itself.
Verification is off only with ``tls_verify=False``.

Every failure becomes one line of the runtime's errors: an unknown host, a
refused certificate, 401 and 404 are bad input (exit 2); a registry that
keeps failing after the retries (connection errors, 5xx, 429) is not done
(exit 1).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tenacity

from ..errors import BadInput, NotDone, NotFound
from . import castore
from .auth import Challenge, Credentials, parse_challenge

DEFAULT_CERTS_D = ("/etc/containers/certs.d", "/etc/docker/certs.d")
ATTEMPTS = 5
USER_AGENT = "volmerge"


class Transient(Exception):
    """Worth another try (connection dropped, 5xx, 429, a short body)."""


@dataclass(frozen=True)
class TlsOptions:
    verify: bool = True
    cert_dir: str | None = None      # podman's --cert-dir: the host's own directory


def _cert_dirs(host: str, opts: TlsOptions) -> list[Path]:
    if opts.cert_dir:
        return [Path(opts.cert_dir)]
    env = os.environ.get("VOLMERGE_CERTS_D")
    roots = [env] if env else list(DEFAULT_CERTS_D)
    return [Path(r) / host for r in roots]


def ssl_context(host: str, opts: TlsOptions) -> ssl.SSLContext | bool:
    """The TLS settings for ``host`` (``HOST[:PORT]``)."""
    if not opts.verify:
        return False
    ctx = castore.default_context()
    for d in _cert_dirs(host, opts):
        if not d.is_dir():
            if opts.cert_dir:
                raise BadInput(f"certificate directory {d} does not exist")
            continue
        for f in sorted(d.iterdir()):
            try:
                if f.suffix == ".crt":
                    ctx.load_verify_locations(cafile=str(f))
                elif f.suffix == ".cert":
                    key = f.with_suffix(".key")
                    if not key.exists():
                        raise BadInput(f"client certificate {f} has no key {key.name} beside it")
                    ctx.load_cert_chain(str(f), str(key))
            except (ssl.SSLError, OSError) as exc:
                raise BadInput(f"cannot use certificate {f}: {exc}") from None
    return ctx


def _why(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())[:300]


def _dns_failure(exc: BaseException) -> bool:
    text = _why(exc).lower()
    return any(s in text for s in ("name or service not known", "nodename nor servname",
                                   "temporary failure in name resolution",
                                   "no address associated", "name resolution"))


class Session:
    """One registry host: one httpx client, tokens per scope, shared by threads."""

    def __init__(self, host: str, api_host: str, *, creds: Credentials | None,
                 tls: TlsOptions = TlsOptions(), timeout: float = 60.0,
                 http2: bool = True) -> None:
        self.host = host
        self.base = f"https://{api_host}"
        self.creds = creds
        self._auth: dict[str, str] = {}        # scope -> Authorization header value
        self._lock = threading.Lock()
        self._verify = ssl_context(host, tls)
        self._timeout = timeout
        self.client = self._new_client(http2=http2)
        # without HTTP/2 the one client's pool serves the bodies as well
        self._bulk: httpx.Client | None = None if http2 else self.client

    def _new_client(self, *, http2: bool) -> httpx.Client:
        return httpx.Client(
            http2=http2, verify=self._verify, follow_redirects=True,
            timeout=httpx.Timeout(self._timeout, connect=15.0), trust_env=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    def bulk(self) -> httpx.Client:
        """The client for blob bodies, downloads and uploads: HTTP/1.1, a
        connection per transfer.  Over one HTTP/2 connection a download
        took about twice the CPU of HTTP/1.1 (h2 parses every 16 KiB frame
        in Python, and the transfers share one TLS stream: 157 MB in three
        layers, 0.57 s against 0.30 s of CPU on loopback), and large
        uploads side by side broke httpcore's sync flow control (an
        AssertionError in h2's send_data, pushing a 370 MB layer beside
        others)."""
        with self._lock:
            if self._bulk is None:
                self._bulk = self._new_client(http2=False)
            return self._bulk

    def close(self) -> None:
        self.client.close()
        if self._bulk is not None and self._bulk is not self.client:
            self._bulk.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else self.base + path

    @contextlib.contextmanager
    def stream(self, method: str, path: str, scope: str, *, headers: dict[str, str] | None = None,
               content: Any = None, what: str = "", bulk: bool = False
               ) -> Iterator[httpx.Response]:
        """One request, authenticated for ``scope`` (answering one 401 challenge).
        Transport errors become Transient (the caller retries) or BadInput.
        Credentials and tokens go only to the registry's own origin (an
        upload location elsewhere gets none, as httpx does for redirects).
        A request with a body, or ``bulk`` (a blob's body to read), goes
        over :meth:`bulk`'s connections."""
        url = self.url(path)
        own = url.startswith(self.base + "/")
        if not own and not url.startswith("https://"):
            raise BadInput(f"{what}: the registry sent us to {url.split('?')[0]!r}, not https")
        for attempt in range(2):
            h = dict(headers or {})
            auth = self._auth.get(scope) if own else None
            if auth:
                h["Authorization"] = auth
            try:
                client = self.client if content is None and not bulk else self.bulk()
                with client.stream(method, url, headers=h,
                                   content=content() if callable(content) else content) as r:
                    if r.status_code == 401 and attempt == 0 and own:
                        header = r.headers.get("www-authenticate", "")
                        r.read()
                        self._answer(parse_challenge(header), scope, what)
                        continue
                    yield r
                    return
            except httpx.TransportError as exc:
                raise self._transport(exc, what) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _transport(self, exc: httpx.TransportError, what: str) -> Exception:
        where = f"{what}: " if what else ""
        if isinstance(exc, httpx.ConnectError):
            if _dns_failure(exc):
                return BadInput(f"{where}unknown registry host {self.host}: {_why(exc)}")
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
                return BadInput(
                    f"{where}TLS certificate of {self.host} not trusted ({_why(exc)}); put its CA"
                    f" in certs.d/{self.host}/ca.crt or, knowingly, use --tls-verify=false")
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
                return BadInput(f"{where}{self.host} does not speak TLS ({_why(exc)})")
        return Transient(f"{where}{self.host}: {_why(exc)}")

    def _answer(self, ch: Challenge, scope: str, what: str) -> None:
        """Set the Authorization for ``scope`` from a 401's challenge."""
        where = f"{what}: " if what else ""
        if ch.scheme == "basic":
            if self.creds is None:
                raise BadInput(f"{where}{self.host} requires authentication: "
                               f"volmerge login {self.host}")
            self._auth[scope] = self.creds.basic()
            return
        if ch.scheme != "bearer" or not ch.params.get("realm"):
            raise BadInput(f"{where}{self.host} asks for unsupported authentication "
                           f"{ch.scheme or 'none'!r}")
        self._auth[scope] = "Bearer " + self._token(ch, scope, what)

    def _token(self, ch: Challenge, scope: str, what: str) -> str:
        realm = ch.params["realm"]
        if not realm.startswith("https://") and not realm.startswith("http://127.0.0.1") and \
                not realm.startswith("http://localhost") and not realm.startswith("http://[::1]"):
            raise BadInput(f"{self.host}: refusing token realm {realm!r} (not https)")
        params = {k: v for k, v in (("service", ch.params.get("service")),
                                    ("scope", ch.params.get("scope") or scope)) if v}
        h = {"Authorization": self.creds.basic()} if self.creds else {}
        try:
            r = self.client.get(realm, params=params, headers=h)
        except httpx.TransportError as exc:
            raise self._transport(exc, f"token from {realm}") from None
        if r.status_code in (401, 403):
            raise BadInput(f"{what + ': ' if what else ''}{self.host}: authentication failed "
                           f"(token server said {r.status_code})")
        if r.status_code != 200:
            raise Transient(f"token server {realm} answered {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise BadInput(f"token server {realm} did not answer JSON") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise BadInput(f"token server {realm} gave no token")
        return token

    def check(self, r: httpx.Response, what: str) -> None:
        """Raise for a response that is not 2xx."""
        code = r.status_code
        if 200 <= code < 300:
            return
        detail = _error_detail(r)
        if code == 401:
            raise BadInput(f"{what}: unauthorized{detail}"
                           + ("" if self.creds else f" (volmerge login {self.host})"))
        if code == 403:
            raise BadInput(f"{what}: denied{detail}")
        if code == 404:
            raise NotFound(f"{what}: not found{detail}")
        if code == 429 or code >= 500:
            raise Transient(f"{what}: {self.host} answered {code}{detail}")
        raise BadInput(f"{what}: {self.host} answered {code}{detail}")


def _error_detail(r: httpx.Response) -> str:
    """`` (MANIFEST_UNKNOWN: ...)`` from a distribution error body, if any."""
    try:
        if not r.is_stream_consumed:
            r.read()
        if len(r.content) >= 65536:
            return ""
        err = r.json()["errors"][0]
        return f" ({err.get('code', '')}: {' '.join(str(err.get('message', '')).split())[:200]})"
    except Exception:  # noqa: BLE001 - any odd body simply has no detail
        return ""


def retrying(what: str, attempts: int = ATTEMPTS) -> tenacity.Retrying:
    """Retry Transient errors with back-off; the last one becomes NotDone."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=0.2, max=4),
        retry=tenacity.retry_if_exception_type(Transient),
        retry_error_callback=lambda state: _give_up(what, state),
    )


def _give_up(what: str, state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    raise NotDone(f"{what}: gave up after {state.attempt_number} attempts: {exc}") from None
