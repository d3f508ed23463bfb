"""The old image's PostgreSQL programs, runnable inside a container of the new image.

``pg_upgrade`` needs both versions' programs side by side: it runs the old
``pg_ctl``, ``postgres`` and ``pg_controldata`` itself.  The old image's
root is mounted read-only at :data:`OLD_ROOT` in the new image's temporary
container, and each old program gets a small shell wrapper that starts it
through the *old* root's dynamic loader with the old root's library
directories (``ld.so --library-path DIRS --argv0 WRAPPER PROGRAM``): the
old binary runs on its own C library and its own libicu, libssl..., never
on the new image's.

The wrappers sit at the old bin directory's own path below a mirror
directory (every other entry along that path a symlink into the old root),
and ``--argv0`` names the wrapper: PostgreSQL finds its siblings (``pg_ctl``
starts ``postgres`` from its own directory) and its share and lib
directories (relative to its own path) in the mirror, i.e. in the old
root, and every program it starts is again a wrapper.

Nothing here runs anything: the files are written, the first program run
through them (``postgres --single``) says whether they work; if not, the
upgrade takes the dump-and-restore path.
"""

from __future__ import annotations

import glob
import os
import shlex
import struct
from pathlib import Path

from volmerge.runtime import sys as rsys

#: where the old image's root is mounted inside the new image's container
OLD_ROOT = "/.volmerge-pg-old"
#: where the loader looks when nothing else is configured (glibc and musl)
_DEFAULT_LIB_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib")
PT_INTERP = 3


def elf_interp(head: bytes) -> str | None:
    """The program interpreter (dynamic loader) named in an ELF file's
    ``PT_INTERP`` header, from the file's first bytes; None for a static or
    non-ELF file (or one whose headers lie beyond ``head``)."""
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
    try:
        if is64:
            phoff, = struct.unpack_from(end + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
        else:
            phoff, = struct.unpack_from(end + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
        for i in range(min(phnum, 64)):
            at = phoff + i * phentsize
            ptype, = struct.unpack_from(end + "I", head, at)
            if ptype != PT_INTERP:
                continue
            if is64:
                off, = struct.unpack_from(end + "Q", head, at + 8)
                size, = struct.unpack_from(end + "Q", head, at + 32)
            else:
                off, = struct.unpack_from(end + "I", head, at + 4)
                size, = struct.unpack_from(end + "I", head, at + 16)
            raw = head[off:off + size]
            if len(raw) != size or size == 0:
                return None
            return raw.rstrip(b"\0").decode("utf-8", "replace") or None
    except struct.error:
        return None
    return None


def ld_conf_dirs(root: Path) -> list[str]:
    """The library directories the image's loader configuration names
    (``/etc/ld.so.conf`` and its ``include`` files, then the defaults),
    as paths inside the image, those that exist there, each once."""
    out: list[str] = []
    seen_files: set[str] = set()

    def read(path: str, depth: int) -> None:
        if depth > 4 or path in seen_files:
            return
        seen_files.add(path)
        try:
            text = rsys.path_in_root(root, path).read_text(errors="replace")
        except (OSError, ValueError):
            return
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include"):
                pattern = line[len("include"):].strip()
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                host = rsys.path_in_root(root, os.path.dirname(pattern))
                for f in sorted(glob.glob(glob.escape(str(host)) + "/"
                                          + os.path.basename(pattern))):
                    read(os.path.join(os.path.dirname(pattern), os.path.basename(f)), depth + 1)
            elif line.startswith("/"):
                out.append(line)

    read("/etc/ld.so.conf", 0)
    multiarch = []  # Debian's loader has its multiarch directories built in
    for d in ("/lib", "/usr/lib"):
        host = rsys.path_in_root(root, d)
        if host.is_dir():
            multiarch += sorted(f"{d}/{e}" for e in os.listdir(host) if "-linux-" in e)
    dirs = []
    for d in [*out, *multiarch, *_DEFAULT_LIB_DIRS]:
        d = os.path.normpath(d)
        if d not in dirs and rsys.path_in_root(root, d).is_dir():
            dirs.append(d)
    return dirs


def _in_root(root: Path, path: str) -> str:
    """``path`` of the image, symlinks resolved inside it, as a path inside it."""
    return "/" + os.path.relpath(rsys.path_in_root(root, path), root).lstrip("./")


def _mirror(root: Path, bindir: str, dest: Path, mount_at: str) -> Path:
    """``dest`` + ``bindir`` as a real directory, every other entry along
    the way a symlink to the same entry of the old root (at ``mount_at``)."""
    here, inside = dest, ""
    for part in [p for p in bindir.split("/") if p]:
        here.mkdir(exist_ok=True)
        src = rsys.path_in_root(root, inside or "/")
        for e in sorted(os.listdir(src)):
            if e != part and not os.path.lexists(here / e):
                os.symlink(f"{mount_at}{inside}/{e}", here / e)
        here, inside = here / part, f"{inside}/{part}"
    here.mkdir(exist_ok=True)
    return here


def write_wrappers(root: Path, bindir: str, dest: Path, *, mount_at: str = OLD_ROOT) -> str:
    """Under ``dest`` (a directory the new container sees at the same path),
    a mirror of the old image (``root``, mounted at ``mount_at`` in the new
    container) whose ``bindir`` holds one wrapper per program of the old
    image's ``bindir``.  Returns the wrappers' directory.  NotDone-free: a
    program without a loader (static) is exec'd as it is."""
    real = _in_root(root, bindir)
    out = _mirror(root, real, dest, mount_at)
    libs = ":".join(mount_at + d for d in ld_conf_dirs(root))
    locales = rsys.path_in_root(root, "/usr/lib/locale")
    env = (f"export LOCPATH={shlex.quote(mount_at + '/usr/lib/locale')}\n"
           if locales.is_dir() else "")
    host_bin = rsys.path_in_root(root, real)
    for name in sorted(os.listdir(host_bin)):
        prog = host_bin / name
        if not prog.is_file() or prog.is_symlink() or not os.access(prog, os.X_OK):
            continue
        with open(prog, "rb") as f:
            head = f.read(8192)
        target = shlex.quote(f"{mount_at}{real}/{name}")
        interp = elf_interp(head)
        if interp is not None:
            loader = shlex.quote(mount_at + _in_root(root, interp))
            cmd = (f'{env}exec {loader} --library-path {shlex.quote(libs)} --argv0 "$0" '
                   f'{target} "$@"')
        elif head.startswith(b"\x7fELF"):
            cmd = f'exec {target} "$@"'  # static: runs anywhere
        else:
            continue  # a script of the old image: not one pg_upgrade runs
        w = out / name
        w.write_text(f"#!/bin/sh\n# the old image's {name} (volmerge pg_upgrade)\n{cmd}\n")
        os.chmod(w, 0o755)
    return str(out)


__all__ = ["OLD_ROOT", "elf_interp", "ld_conf_dirs", "write_wrappers"]
