"""The OCI runtime spec (``config.json``) from image config + run options.

The spec is the contract between the engine and every executor: runc reads
it as is, the builtin executor implements the subset written here.  Image
defaults are applied here and nowhere else (see runtime.options).
"""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

from .errors import BadInput
from .options import RunOptions

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MASKED_PATHS = [
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
READONLY_PATHS = [
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]


class ResolvedMount:
    """A mount with its source on the host and its target resolved inside the
    rootfs (no symlink left in it), ready for either executor.

    This and Process are the spec builder's own records, made per start:
    plain slotted classes, not dataclasses generated at every import on the
    run path."""

    __slots__ = ("kind", "source", "target", "readonly", "options", "name")

    def __init__(self, kind: str, source: str, target: str, readonly: bool = False,
                 options: tuple[str, ...] = (), name: str = "") -> None:
        self.kind = kind          # bind | volume | tmpfs
        self.source = source      # host path ("tmpfs" for tmpfs)
        self.target = target      # absolute path inside the container, symlink-free
        self.readonly = readonly
        self.options = options
        self.name = name          # volume name

    def __repr__(self) -> str:
        return f"ResolvedMount({self.kind!r}, {self.source!r}, {self.target!r}, {self.readonly})"

    def to_record(self) -> dict[str, Any]:
        """As the container's row keeps it (``mounts``, read back as dicts)."""
        return {k: getattr(self, k) for k in self.__slots__}


class Process:
    """The container's process as the OCI spec gets it (image config + options)."""

    __slots__ = ("args", "env", "cwd", "uid", "gid", "additional_gids")

    def __init__(self, args: list[str], env: list[str], cwd: str, uid: int, gid: int,
                 additional_gids: list[int]) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids


# -- paths inside the image ------------------------------------------------------

def special_file_target(rootfs: Path, path: str) -> str:
    """Where a file the engine provides (/etc/hosts, /etc/hostname,
    /etc/resolv.conf) is mounted: ``path`` with the image's symlinks followed
    inside the root, ``..`` above it staying at it (as runc's securejoin)."""
    from . import sys as rsys

    rel = rsys.path_in_root(rootfs, path, clamp=True).relative_to(rootfs).as_posix()
    return "/" + rel


def resolve_in_root(rootfs: Path, path: str, *, what: str = "path") -> str:
    """Resolve ``path`` inside ``rootfs`` following the image's symlinks as the
    container would see them; return the symlink-free absolute path.

    Absolute symlinks are rooted at the rootfs (like in the container).  A
    relative symlink whose ``..`` climbs above the root is an attempt to
    escape: BadInput, rather than silently clamping it.
    """
    from . import sys as rsys

    try:
        p = rsys.path_in_root(rootfs, path, clamp=False)
    except rsys.PathEscape:
        raise BadInput(f"{what} {path} escapes the container's root file system") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise BadInput(f"{what} {path}: too many levels of symbolic links in the image") from None
    rel = p.relative_to(rootfs).as_posix()
    return "/" if rel == "." else "/" + rel


def find_executable(rootfs: Path, argv0: str, path_env: str) -> str | None:
    """Where ``argv0`` is in the image (as execvp would find it), or None."""
    if "/" in argv0:
        cands = [argv0 if argv0.startswith("/") else "/" + argv0]
    else:
        cands = [f"{d.rstrip('/')}/{argv0}" for d in path_env.split(":") if d.startswith("/")]
    for c in cands:
        try:
            real = rootfs / resolve_in_root(rootfs, c, what="command").lstrip("/")
        except BadInput:
            continue
        if real.is_file() and os.access(real, os.X_OK):
            return c
    return None


#: the most of /etc/passwd or /etc/group read (a real one is a few kB)
_DB_LIMIT = 4 << 20


def _read_db(rootfs: Path, rel: str) -> list[list[str]]:
    """The rows of ``rel`` (/etc/passwd, /etc/group) in ``rootfs``; none when
    it is missing or no regular file.  ``exec -u`` reads them from a running
    container's root, which the container may change meanwhile: no symlink is
    followed after the resolution (a swap cannot lead out of the root), a
    FIFO cannot block the read nor a device node (``mknod``) make it endless."""
    try:
        fd = _open_in_root(rootfs, resolve_in_root(rootfs, rel))
    except (OSError, BadInput):
        return []
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = b""
        while len(data) < _DB_LIMIT:
            chunk = os.read(fd, _DB_LIMIT - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return []
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    return [line.split(":") for line in text.split("\n") if line.strip() and not line.startswith("#")]


def _open_in_root(rootfs: Path, path: str) -> int:
    """A read-only, non-blocking descriptor of the symlink-free ``path``
    below ``rootfs``, opened one component at a time without following any."""
    parts = [x for x in path.split("/") if x]
    if not parts or ".." in parts:
        raise BadInput(f"{path}: not a file below the root")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = sub
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                       dir_fd=fd)
    finally:
        os.close(fd)


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int], str]:
    """``user[:group]`` (names or numbers) -> uid, gid, supplementary gids,
    home, read from the image's /etc/passwd and /etc/group."""
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _read_db(rootfs, "/etc/passwd")
    uid: int | None = None
    gid: int | None = None
    home = "/"
    username = None
    for row in passwd:
        if len(row) < 6:
            continue
        if row[0] == name or (name.isdigit() and row[2] == name):
            try:
                uid, gid = int(row[2]), int(row[3])
            except ValueError:
                continue
            home, username = row[5] or "/", row[0]
            break
    if uid is None:
        if not name.isdigit():
            raise BadInput(f"user {name!r} not found in the image's /etc/passwd")
        uid, gid = int(name), 0 if not group else 0
        if uid == 0:
            home = "/root"
    groups = _read_db(rootfs, "/etc/group")
    if group:
        gid = None
        for row in groups:
            if len(row) >= 3 and (row[0] == group or (group.isdigit() and row[2] == group)):
                gid = int(row[2])
                break
        if gid is None:
            if not group.isdigit():
                raise BadInput(f"group {group!r} not found in the image's /etc/group")
            gid = int(group)
    extra: list[int] = []
    if username is not None and not group:
        for row in groups:
            if len(row) >= 4 and username in row[3].split(",") and row[2].isdigit():
                g = int(row[2])
                if g != gid and g not in extra:
                    extra.append(g)
    assert gid is not None
    from .options import MAX_ID

    if max(uid, gid, *extra) > MAX_ID:  # the image's User or /etc/passwd, say
        raise BadInput(f"user {user!r} resolves to an id beyond {MAX_ID} (uid {uid}, gid {gid})")
    return uid, gid, extra, home


def resolve_process(rootfs: Path, image_config: dict[str, Any], opts: RunOptions,
                    hostname: str) -> Process:
    """argv, env, cwd and user: the operator's options over the image's defaults."""
    cfg = image_config.get("config") or {}
    if opts.entrypoint is not None:
        argv = [a for a in opts.entrypoint] + list(opts.command or [])
    else:
        cmd = opts.command if opts.command else (cfg.get("Cmd") or [])
        argv = list(cfg.get("Entrypoint") or []) + list(cmd)
    if not argv or not argv[0]:
        raise BadInput(f"no command specified: image {opts.image} has no Cmd or Entrypoint")
    env: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.update(opts.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = hostname
    uid, gid, extra, home = resolve_user(rootfs, opts.user or cfg.get("User") or "")
    env.setdefault("HOME", home)
    if find_executable(rootfs, argv[0], env["PATH"]) is None:
        raise BadInput(f"command {argv[0]!r} not found in image {opts.image}")
    cwd = opts.workdir or cfg.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise BadInput(f"working directory {cwd!r} must be absolute")
    return Process(argv, [f"{k}={v}" for k, v in env.items()], cwd, uid, gid, extra)


def _rlimit_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1048576 if hard == resource.RLIM_INFINITY else min(1048576, hard)


# Docker's fallback when the host only names resolvers on its own loopback
# (unreachable from a container's network namespace)
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def container_resolv_conf(host: str, systemd_upstream: str | None, *, share_host_net: bool) -> str:
    """The container's /etc/resolv.conf from the host's, as Docker makes it.

    Sharing the host's network: the host's file as it is.  Otherwise the
    nameservers on the host's loopback (a local stub such as
    systemd-resolved's 127.0.0.53) are dropped — the container has a
    loopback of its own; when none is left, systemd-resolved's upstream list
    (``/run/systemd/resolve/resolv.conf``) is used, else Docker's public
    fallback.  search/options lines are kept."""
    if share_host_net:
        return host

    def servers(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] == "nameserver":
                ip = f[1].split("%")[0]
                if not (ip.startswith("127.") or ip == "::1" or ip == "0.0.0.0"):
                    out.append(f[1])
        return out

    keep = [line for line in host.splitlines()
            if line.split()[:1] and line.split()[0] in ("search", "domain", "options")]
    found = servers(host) or (servers(systemd_upstream) if systemd_upstream else []) \
        or list(FALLBACK_NAMESERVERS)
    return "\n".join(keep + [f"nameserver {ip}" for ip in found]) + "\n"


def host_resolv_conf(share_host_net: bool, dns: list[str] | None = None,
                     dns_search: list[str] | None = None) -> str:
    """container_resolv_conf from this host's files; ``dns`` / ``dns_search``
    (``run --dns`` / ``--dns-search``) replace its nameservers / search line."""
    text = _host_resolv_conf(share_host_net)
    if not dns and not dns_search:
        return text
    lines = text.splitlines()
    if dns_search:
        lines = [x for x in lines if x.split()[:1] not in (["search"], ["domain"])]
        lines.insert(0, "search " + " ".join(dns_search))
    if dns:
        lines = [x for x in lines if x.split()[:1] != ["nameserver"]] + [f"nameserver {ip}" for ip in dns]
    return "\n".join(lines) + "\n"


def _host_resolv_conf(share_host_net: bool) -> str:
    def read(path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return None

    return container_resolv_conf(read("/etc/resolv.conf") or "",
                                 read("/run/systemd/resolve/resolv.conf"), share_host_net=share_host_net)


def build_spec(proc: Process, *, hostname: str, mounts: list[ResolvedMount],
               netns: str | None, share_host_net: bool, cgroups_path: str,
               memory: int | None = None, pids_limit: int | None = None,
               hosts_path: str | None = None, readonly_root: bool = False,
               files: Sequence[tuple[str, str, bool]] = (), terminal: bool = False) -> dict[str, Any]:
    """The OCI runtime spec for one container (rootfs is ``bundle/rootfs``).
    ``files``: (destination, host file, read-only) bind mounts of single
    files such as /etc/hostname; ``hosts_path``: /etc/hosts, read-only."""
    caps = list(DEFAULT_CAPS)
    nofile = _rlimit_nofile()
    spec_mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    if hosts_path:
        files = [("/etc/hosts", hosts_path, True), *files]
    for dest, src, ro in files:
        spec_mounts.append({"destination": dest, "type": "bind", "source": src,
                            "options": ["rbind", "rprivate", "ro" if ro else "rw"]})
    for m in mounts:
        if m.kind == "tmpfs":
            opts = ["nosuid", "nodev", *m.options]
            if not any(o.startswith("mode=") for o in opts):
                opts.append("mode=1777")
            if m.readonly:
                opts.append("ro")
            spec_mounts.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                                "options": opts})
        else:
            spec_mounts.append({"destination": m.target, "type": "bind", "source": m.source,
                                "options": ["rbind", "rprivate", "ro" if m.readonly else "rw"]})
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not share_host_net:
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory:
        resources["memory"] = {"limit": memory}
    if pids_limit:
        resources["pids"] = {"limit": pids_limit}
    root_user = proc.uid == 0
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            # umask 0022 as docker and podman: not the caller's (umask 000 must
            # not make every file a container creates world-writable)
            "user": {"uid": proc.uid, "gid": proc.gid, "additionalGids": proc.additional_gids,
                     "umask": 0o022},
            "args": proc.args,
            "env": proc.env,
            "cwd": proc.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps if root_user else [],
                "permitted": caps if root_user else [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": readonly_root},
        "hostname": hostname,
        "mounts": spec_mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
