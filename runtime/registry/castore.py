"""The system's trusted CAs as an ``ssl.SSLContext``, loaded ahead of time.

``ssl.create_default_context()`` parses the whole CA bundle (~140
certificates, ~20 ms here) while holding the GIL.  The context built here is
the same one — ``create_default_context`` given the very file and directory
OpenSSL's defaults name (``ssl.get_default_verify_paths``, which honours
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` as OpenSSL does) — but
``load_verify_locations`` lets other threads run, so ``preload()``, called
when a pull starts, has it built on another core while the pull imports its
HTTP client.  Each preloaded context serves one connection setup: the
registry's own CAs (certs.d) are added to it, never to a shared one.
"""

from __future__ import annotations

import os
import ssl
import threading

_lock = threading.Lock()
_ready: list[threading.Thread] = []       # at most one preload under way
_contexts: list[ssl.SSLContext] = []      # at most one preloaded context


def build() -> ssl.SSLContext:
    """A new client context trusting the system's CAs, as
    ``ssl.create_default_context()`` makes it."""
    p = ssl.get_default_verify_paths()
    cafile = p.cafile if p.cafile and os.path.isfile(p.cafile) else None
    capath = p.capath if p.capath and os.path.isdir(p.capath) else None
    if cafile is None and capath is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except ssl.SSLError:
        # a bundle OpenSSL's defaults would read in part, ignoring the error
        return ssl.create_default_context()


def _preload() -> None:
    try:
        ctx = build()
    except (ssl.SSLError, OSError):
        return  # default_context() builds it again and raises there
    with _lock:
        _contexts.append(ctx)


def preload() -> None:
    """Start building one context in a thread (a daemon: nothing waits for
    it when no connection is made)."""
    with _lock:
        if _ready or _contexts:
            return
        t = threading.Thread(target=_preload, name="ca-load", daemon=True)
        _ready.append(t)
    t.start()


def default_context() -> ssl.SSLContext:
    """The preloaded context if there is one (waiting for it), else a new one."""
    with _lock:
        pending = _ready.pop() if _ready else None
    if pending is not None:
        pending.join()
    with _lock:
        if _contexts:
            return _contexts.pop()
    return build()
