"""The recipe of each image kind: its layers (host inputs, and the entries
made from them only when the cache misses), its config and its name.
busybox, python, PostgreSQL 15 (Debian's) and 16 (pgserver's) here; the
demo app's own layer in volmerge.demoimages.demoapp."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .demoapp import demo_config, demo_entries
from .hostfs import Rootfs, is_elf
from .kinds import KINDS, PATH_ENV, REFS, FixtureError
from .ociwriter import Dir, Entry, File, HostFile, Symlink

PG15_DIR = Path("/usr/lib/postgresql/15")
PG15_SHARE = Path("/usr/share/postgresql/15")
PG16_PREFIX = "/usr/local/pgsql"
MULTIARCH_LIB = "/usr/lib/x86_64-linux-gnu"


@dataclass
class Layer:
    """One cached layer: a name, the host inputs its content depends on, and
    a function producing its entries (called only when the cache misses)."""

    name: str
    inputs: list[str]
    entries: Callable[[], dict[str, Entry]]
    salt: str = ""


@dataclass
class Recipe:
    layers: list[Layer]
    config: dict
    ref: str
    history: list[str]


def _passwd(extra_users: str = "", extra_groups: str = "") -> dict[str, Entry]:
    return {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                      "user:x:1000:1000:user:/home/user:/bin/sh\n" + extra_users,
        "etc/group": "root:x:0:\nnobody:x:65534:\nusers:x:100:\nuser:x:1000:\n" + extra_groups,
    }


def busybox_entries() -> dict[str, Entry]:
    bb = Path(os.path.realpath("/bin/busybox"))
    if not bb.is_file():
        raise FixtureError("busybox-static is not installed (/bin/busybox missing)")
    applets = subprocess.run([str(bb), "--list"], capture_output=True, text=True, check=True).stdout.split()
    e: dict[str, Entry] = {
        "bin": Dir(),
        "bin/busybox": HostFile(bb, mode=0o755, uid=0, gid=0),
        "dev": Dir(), "proc": Dir(), "sys": Dir(), "etc": Dir(), "var": Dir(),
        "root": Dir(0o700), "home": Dir(), "home/user": Dir(0o755, 1000, 1000),
        "tmp": Dir(0o1777), "var/tmp": Dir(0o1777), "run": Dir(),
        "etc/hostname": "fixture\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    }
    e.update(_passwd())
    for a in applets:
        if a != "busybox" and "/" not in a:
            e[f"bin/{a}"] = Symlink("busybox")
    return e


def busybox_layer() -> Layer:
    return Layer("busybox", ["/bin/busybox"], busybox_entries)


_PY_EXCLUDE_TOP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                   "site-packages", "dist-packages"}


def _py_exclude(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    if top in _PY_EXCLUDE_TOP or top.startswith("config-3."):
        return True
    parts = rel.split("/")
    return "tests" in parts[:-1] or parts[-1] in ("tests",)


def _python_entries() -> dict[str, Entry]:
    py = Path("/usr/bin/python3.11")
    stdlib = Path("/usr/lib/python3.11")
    if not py.is_file() or not stdlib.is_dir():
        raise FixtureError("Debian's python3.11 is not installed (/usr/bin/python3.11)")
    r = Rootfs()
    r.add_host(py)
    r.add("usr/bin/python3", Symlink("python3.11"))
    r.add("usr/bin/python", Symlink("python3.11"))
    r.add_tree(stdlib, exclude=_py_exclude)
    dynload = sorted((stdlib / "lib-dynload").glob("*.so"))
    r.add_closure([py, *dynload])
    if Path("/usr/lib/locale/C.utf8").is_dir():
        r.add_tree("/usr/lib/locale/C.utf8")
    return r.entries


def _python_layer() -> Layer:
    return Layer("python", ["/usr/bin/python3.11", "/usr/lib/python3.11"], _python_entries)


def _pg_entrypoint(bindir: str) -> str:
    return f"""#!/bin/sh
# volmerge fixture: initialise $PGDATA on first start, then run the server.
set -e
export PATH="{bindir}:$PATH"
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "unix_socket_directories = '/var/run/postgresql'" >> "$PGDATA/postgresql.conf"
    echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"
    echo "host all all ::/0 trust" >> "$PGDATA/pg_hba.conf"
fi
exec "$@"
"""


def _pg_common(r: Rootfs, bindir: str) -> None:
    for k, v in _passwd("postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
                        "postgres:x:999:\n").items():
        r.add(k, v)
    r.add("var/lib/postgresql", Dir(0o755, 999, 999))
    r.add("var/lib/postgresql/data", Dir(0o700, 999, 999))
    r.add("var/run/postgresql", Dir(0o2775, 999, 999))
    r.add("usr/local/bin/pg-entrypoint", File(_pg_entrypoint(bindir), mode=0o755))
    if Path("/usr/lib/locale/C.utf8").is_dir():
        r.add_tree("/usr/lib/locale/C.utf8")


def _pg_config(bindir: str, version: str) -> dict:
    return {
        "Env": [f"PATH={bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PGDATA=/var/lib/postgresql/data", "LANG=C.UTF-8"],
        "Entrypoint": ["/usr/local/bin/pg-entrypoint"],
        "Cmd": ["postgres"],
        "User": "999:999",
        "WorkingDir": "/var/lib/postgresql",
        "ExposedPorts": {"5432/tcp": {}},
        "Volumes": {"/var/lib/postgresql/data": {}},
        "StopSignal": "SIGINT",
        "Healthcheck": {"Test": ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres || exit 1"],
                        "Interval": 1_000_000_000, "Timeout": 5_000_000_000, "Retries": 30},
        "Labels": {"org.opencontainers.image.version": version,
                   "org.opencontainers.image.title": "volmerge fixture postgres"},
    }


def _pg15_entries() -> dict[str, Entry]:
    bindir = PG15_DIR / "bin"
    if not (bindir / "postgres").is_file() or not PG15_SHARE.is_dir():
        raise FixtureError("PostgreSQL 15 server is not installed (/usr/lib/postgresql/15/bin)")
    r = Rootfs()
    r.add_tree(bindir)
    r.add_tree(PG15_DIR / "lib", exclude=lambda rel: rel.startswith("bitcode") or rel.startswith("llvmjit"))
    r.add_tree(PG15_SHARE)
    # Debian builds with --with-system-tzdata: initdb reads /usr/share/zoneinfo.
    r.add_tree("/usr/share/zoneinfo", exclude=lambda rel: rel.split("/")[0] in ("right", "posix"))
    elves = [p for p in bindir.iterdir() if is_elf(p)]
    elves += [p for p in (PG15_DIR / "lib").glob("*.so") if not p.name.startswith("llvmjit")]
    r.add_closure(elves)
    _pg_common(r, str(bindir))
    return r.entries


def _pg16_install() -> Path:
    import importlib.util

    # find_spec, not import: importing pgserver has side effects (platformdirs).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.origin:
        raise FixtureError(
            "postgres16 needs the PyPI package pgserver (pip install 'volmerge[pg16]')"
        )
    inst = Path(spec.origin).resolve().parent / "pginstall"
    if not (inst / "bin" / "postgres").is_file():
        raise FixtureError(f"pgserver ships no PostgreSQL binaries at {inst}/bin")
    return inst


def _pg16_entries() -> dict[str, Entry]:
    inst = _pg16_install()
    r = Rootfs()
    # pgserver's build is relocatable: bin, lib/postgresql and share/postgresql
    # are found relative to each other under one prefix.
    r.add_tree(inst / "bin", dest=f"{PG16_PREFIX}/bin")
    r.add_tree(inst / "lib" / "postgresql", dest=f"{PG16_PREFIX}/lib/postgresql")
    r.add_tree(inst / "share" / "postgresql", dest=f"{PG16_PREFIX}/share/postgresql")
    elves = [p for p in (inst / "bin").iterdir() if is_elf(p)]
    elves += sorted((inst / "lib" / "postgresql").glob("*.so"))
    # Its RUNPATH names the build machine and its RPATH the wheel's own
    # pgserver.libs: put libpq & co where the loader looks by default.
    libs = inst.parent.parent / "pgserver.libs"
    r.add_closure(elves, relocate={str(inst / "lib"): MULTIARCH_LIB, str(libs): MULTIARCH_LIB})
    _pg_common(r, f"{PG16_PREFIX}/bin")
    return r.entries


def recipe(kind: str) -> Recipe:
    """The layers and config of a fixture kind."""
    bb = busybox_layer()
    bb_cfg = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"],
              "Labels": {"org.opencontainers.image.title": "volmerge fixture busybox"}}
    py = _python_layer()
    if kind == "busybox":
        return Recipe([bb], bb_cfg, REFS[kind], ["busybox-static"])
    if kind == "python":
        cfg = {"Env": [PATH_ENV, "LANG=C.UTF-8"], "Cmd": ["python3"],
               "Labels": {"org.opencontainers.image.title": "volmerge fixture python"}}
        return Recipe([bb, py], cfg, REFS[kind], ["busybox-static", "python3.11 + stdlib"])
    if kind == "postgres15":
        pg = Layer("postgres15", [str(PG15_DIR), str(PG15_SHARE), "/usr/share/zoneinfo"], _pg15_entries)
        return Recipe([bb, pg], _pg_config(str(PG15_DIR / "bin"), "15"), REFS[kind],
                      ["busybox-static", "postgresql 15 (Debian)"])
    if kind == "postgres16":
        inst = _pg16_install()
        pg = Layer("postgres16", [str(inst), str(inst.parent.parent / "pgserver.libs")], _pg16_entries)
        return Recipe([bb, pg], _pg_config(f"{PG16_PREFIX}/bin", "16"), REFS[kind],
                      ["busybox-static", "postgresql 16 (pgserver)"])
    m = re.fullmatch(r"demo-v([123])", kind)
    if m:
        v = int(m.group(1))
        demo = Layer(f"demo-v{v}", [], lambda: demo_entries(v), salt=f"v{v}")
        return Recipe([bb, py, demo], demo_config(v), REFS[kind],
                      ["busybox-static", "python3.11 + stdlib", f"notes demo app v{v}"])
    raise FixtureError(f"unknown fixture kind {kind!r} (kinds: {', '.join(KINDS)})")
