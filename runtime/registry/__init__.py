"""A client of the OCI distribution API: pull, push, login, logout.

``reference`` parses ``registry/name:tag``; ``auth`` reads and writes the
credentials file podman and skopeo use and answers auth challenges;
``transport`` is the HTTP(S) client (TLS, retries, ranges); ``pull`` and
``push`` move images between a registry and the image store.  Nothing here is
imported on the ``run`` path: httpx is loaded only by these modules.
"""

import sys

# httpx's package imports its own command line (httpx._main: click, rich's
# console, pygments) whenever it can: ~80 ms of every pull and push, never
# used here.  Marked absent, httpx falls back to a stub ``main``, as it does
# without its [cli] extra.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
