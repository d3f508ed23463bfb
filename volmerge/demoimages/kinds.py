"""The images the demo and the tests build offline: their kinds and names,
and the error for a host that lacks an input."""

from __future__ import annotations

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

REFS = {
    "busybox": "localhost/volmerge-fixture/busybox:latest",
    "python": "localhost/volmerge-fixture/python:3.11",
    "postgres15": "localhost/volmerge-fixture/postgres:15",
    "postgres16": "localhost/volmerge-fixture/postgres:16",
    "demo-v1": "localhost/volmerge-demo/notes:1",
    "demo-v2": "localhost/volmerge-demo/notes:2",
    "demo-v3": "localhost/volmerge-demo/notes:3",
}
KINDS = tuple(REFS)


class FixtureError(RuntimeError):
    """A fixture image cannot be built on this host (an input is missing)."""
