"""/etc/hosts files for containers, kept current in place.

The engine bind-mounts a container's hosts file at /etc/hosts.  A bind mount
pins the inode, so a rename-over (the usual safe write, architecture.md, principle 3)
would leave the container reading the old file forever: here the content is
rewritten in place instead (pwrite of the whole content, then truncate).  A
reader can at worst see a torn file for the microseconds of one write; the
file is a derived view, rebuilt from the state database on every change, so
nothing is lost if a crash interrupts it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
)


def render(own: tuple[str | None, str, Iterable[str]],
           peers: Iterable[tuple[str, str, Iterable[str]]],
           extra: Iterable[tuple[str, str]] = ()) -> str:
    """``own`` and each peer are ``(ip, hostname, aliases)``; the container's
    own line comes first, peers sorted by address.  A container without an
    address (network ``none``) names itself on 127.0.1.1 like Debian does.
    ``extra`` are the operator's ``(host, ip)`` (``--add-host``), written
    before the others as docker does, so that they win a lookup."""
    ip, hostname, aliases = own
    lines = [HEADER, render_extra(extra)]
    names = " ".join(dict.fromkeys([hostname, *aliases]))
    lines.append(f"{ip or '127.0.1.1'}\t{names}\n")
    def key(p: tuple[str, str, Iterable[str]]) -> tuple[int, ...]:
        return tuple(int(x) for x in p[0].split("."))
    for pip, phost, paliases in sorted(peers, key=key):
        if pip == ip:
            continue
        pnames = " ".join(dict.fromkeys([phost, *paliases]))
        lines.append(f"{pip}\t{pnames}\n")
    return "".join(lines)


def render_extra(extra: Iterable[tuple[str, str]]) -> str:
    """``--add-host`` lines (host names and addresses checked by the caller)."""
    return "".join(f"{ip}\t{host}\n" for host, ip in extra)


def render_host(hostname: str, extra: Iterable[tuple[str, str]] = ()) -> str:
    """Network ``host``: the host's own /etc/hosts plus the container's name
    and the operator's ``--add-host`` lines."""
    try:
        base = Path("/etc/hosts").read_text()
    except OSError:
        base = HEADER
    if not base.endswith("\n"):
        base += "\n"
    return base + render_extra(extra) + f"127.0.1.1\t{hostname}\n"


def write_in_place(path: str | os.PathLike[str], content: str) -> bool:
    """Rewrite ``path`` keeping its inode; returns False when unchanged."""
    data = content.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o777 != 0o644:  # the container's /etc/hosts: not the caller's umask
            os.fchmod(fd, 0o644)
        size = st.st_size
        if size == len(data) and os.pread(fd, size, 0) == data:
            return False
        view = memoryview(data)
        off = 0
        while off < len(data):
            off += os.pwrite(fd, view[off:], off)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return True
