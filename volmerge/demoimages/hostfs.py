"""Root file systems from host files: a host path with every symlink on the
way to it, a host tree, the shared libraries a binary loads (ldd)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .kinds import FixtureError
from .ociwriter import Dir, Entry, HostFile, Symlink, norm, walk_dir


@dataclass
class Rootfs:
    """Entries of one layer, gathered from host paths with their symlinks.

    ``add_host(path)`` reproduces every symlink on the way to ``path`` (e.g.
    Debian's merged-/usr ``/lib -> usr/lib``), so what the dynamic loader or
    Python finds on the host it finds at the same path in the image.
    """

    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, path: str, entry: Entry) -> None:
        self.entries[norm(path)] = entry

    def add_host(self, path: str | Path, _depth: int = 0) -> None:
        if _depth > 40:
            raise FixtureError(f"symlink loop at {path}")
        parts = [p for p in str(path).split("/") if p]
        cur = ""
        for i, part in enumerate(parts):
            cur = f"{cur}/{part}"
            st = os.lstat(cur)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(cur)
                self.entries[norm(cur)] = Symlink(target)
                base = target if target.startswith("/") else os.path.join(os.path.dirname(cur), target)
                rest = "/".join(parts[i + 1:])
                nxt = os.path.normpath(f"{base}/{rest}" if rest else base)
                self.add_host(nxt, _depth + 1)
                return
            if i == len(parts) - 1:
                if stat.S_ISDIR(st.st_mode):
                    self.entries.setdefault(norm(cur), Dir(stat.S_IMODE(st.st_mode)))
                elif stat.S_ISREG(st.st_mode):
                    self.entries[norm(cur)] = HostFile(Path(cur), uid=0, gid=0)

    def add_tree(self, src: str | Path, *, exclude: Callable[[str], bool] = lambda rel: False,
                 dest: str | None = None) -> None:
        """A host tree (its own path inside the image unless ``dest``); symlinks
        that leave the tree have their targets added too."""
        src = Path(src)
        dest = str(src) if dest is None else dest
        for ancestor in _ancestors(str(src)) if dest == str(src) else ():
            self.add_host(ancestor)
        for name, entry in walk_dir(src, dest).items():
            rel = os.path.relpath("/" + name, "/" + norm(dest))
            if rel != "." and exclude(rel):
                continue
            if isinstance(entry, HostFile):
                entry = HostFile(entry.src, uid=0, gid=0)
            elif isinstance(entry, Dir):
                entry = Dir(entry.mode)
            self.entries[name] = entry
            if isinstance(entry, Symlink) and dest == str(src):
                target = os.path.normpath(os.path.join(os.path.dirname("/" + name), entry.target))
                if not target.startswith(str(src) + "/") and os.path.exists(target):
                    self.add_host(target)

    def add_closure(self, binaries: Iterable[str | Path],
                    relocate: dict[str, str] | None = None) -> None:
        """Add every shared library the binaries need (ldd), and the loader.

        ``relocate`` maps a host directory prefix to a directory in the image
        (libraries found there are copied, dereferenced, to the new place).
        """
        for lib in elf_closure(binaries):
            for src, dst in (relocate or {}).items():
                if lib.startswith(src.rstrip("/") + "/"):
                    self.add(f"{dst}/{os.path.basename(lib)}", HostFile(Path(lib), uid=0, gid=0))
                    break
            else:
                self.add_host(lib)


def _ancestors(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def elf_closure(binaries: Iterable[str | Path]) -> list[str]:
    """Host paths of the shared libraries (and loader) the binaries load."""
    files = sorted({str(b) for b in binaries})
    found: set[str] = set()
    for i in range(0, len(files), 200):
        proc = subprocess.run(["ldd", *files[i:i + 200]], capture_output=True, text=True,
                              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise FixtureError(f"ldd: a library is missing on this host: {line.strip()}")
            m = _LDD_LINE.match(line)
            if m:
                found.add(os.path.normpath(m.group(1)))
    return sorted(found)


def is_elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False
