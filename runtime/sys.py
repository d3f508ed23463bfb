"""The kernel behind one seam (architecture.md, principle 9).

Every mount, unmount, unshare, setns and pivot_root in volmerge goes through
this module, so that ordering can be unit-tested (tests/sysrec.py records these
calls instead of making them) and the real calls audited in one place.  Thin
ctypes wrappers over libc; errors become OSError with errno.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from collections.abc import Mapping


def _load_libc() -> ctypes.CDLL:
    # find_library runs `ldconfig -p` (~8 ms at every start): try the usual
    # name first.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# new mount API (fsopen/fsconfig/fsmount/move_mount), x86_64 and aarch64 share numbers
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
SYS_move_mount = 429
SYS_pivot_root = 155 if os.uname().machine == "x86_64" else 41
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1


def _check(ret: int, what: str, path: object = None) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}", None if path is None else str(path))
    return ret


def _b(s: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return os.fsencode(s)


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None,
          flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        f"mount {fstype or 'bind'}",
        target,
    )


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    _check(_libc.syscall(SYS_pivot_root, _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def make_private(path: str = "/") -> None:
    mount(None, path, None, MS_REC | MS_PRIVATE)


def mounts_below(path: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            mp = _unescape(line.split()[4].decode("utf-8", "surrogateescape"))
            if mp == base or mp.startswith(base.rstrip("/") + "/"):
                found.append(mp)
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.path.realpath(path) in mounts_below(path)


def umount_tree(path: str | os.PathLike[str]) -> list[str]:
    """Detach every mount at or below ``path`` (lazy, so busy mounts go
    too); the mount points that were there, deepest first."""
    found = mounts_below(path)
    for mp in found:
        try:
            umount(mp, MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    return found


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) + 0 and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


# -- new mount API: overlay with one lower layer per fsconfig call ------------

def _fsconfig(fd: int, cmd: int, key: str | None, value: str | None) -> None:
    _check(
        _libc.syscall(SYS_fsconfig, fd, cmd, _b(key), _b(value), 0),
        f"fsconfig {key}",
    )


def mount_overlay(target: str | os.PathLike[str], lowers: list[str], upper: str | None = None,
                  work: str | None = None, *, readonly: bool = False,
                  extra: Mapping[str, str | None] | None = None) -> None:
    """Mount an overlay at ``target``.  ``lowers`` is top-most first;
    ``extra``: more options, a value of None for a flag (``volatile``).

    Uses the new mount API (``lowerdir+=``, one layer per call), so the number
    of layers is limited only by the kernel's 500 and not by the 4096-byte
    option page; falls back to mount(2) on kernels without ``lowerdir+``.
    """
    if len(lowers) == 1 and upper is None:
        # overlayfs wants two lowers without an upper: one layer alone is a
        # read-only bind mount of it (a bottom layer holds no whiteouts).
        mount(lowers[0], target, None, MS_BIND)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        return
    try:
        fd = _check(_libc.syscall(SYS_fsopen, b"overlay", FSOPEN_CLOEXEC), "fsopen overlay")
    except OSError:
        _mount_overlay_legacy(target, lowers, upper, work, readonly, extra)
        return
    try:
        try:
            for low in lowers:
                _fsconfig(fd, FSCONFIG_SET_STRING, "lowerdir+", low)
        except OSError as exc:
            if exc.errno == errno.EINVAL and len(lowers) <= 500:
                os.close(fd)
                fd = -1
                _mount_overlay_legacy(target, lowers, upper, work, readonly, extra)
                return
            raise
        if upper is not None:
            _fsconfig(fd, FSCONFIG_SET_STRING, "upperdir", upper)
            _fsconfig(fd, FSCONFIG_SET_STRING, "workdir", work)
        for k, v in (extra or {}).items():  # a value of None sets a flag (e.g. volatile)
            _fsconfig(fd, FSCONFIG_SET_FLAG if v is None else FSCONFIG_SET_STRING, k, v)
        _fsconfig(fd, FSCONFIG_CMD_CREATE, None, None)
        attr = 0x00000001 if readonly else 0  # MOUNT_ATTR_RDONLY
        mfd = _check(_libc.syscall(SYS_fsmount, fd, FSMOUNT_CLOEXEC, attr), "fsmount overlay")
        try:
            _check(
                _libc.syscall(SYS_move_mount, mfd, b"", -100, _b(str(target)),
                              MOVE_MOUNT_F_EMPTY_PATH),
                "move_mount overlay",
                target,
            )
        finally:
            os.close(mfd)
    finally:
        if fd >= 0:
            os.close(fd)


def _mount_overlay_legacy(target: str | os.PathLike[str], lowers: list[str], upper: str | None,
                          work: str | None, readonly: bool,
                          extra: Mapping[str, str | None] | None) -> None:
    data = legacy_overlay_options(lowers, upper, work, extra)
    if len(data) >= 4096:
        raise OSError(errno.E2BIG, "overlay options exceed one page", str(target))
    mount("overlay", target, "overlay", MS_RDONLY if readonly else 0, data)


def legacy_overlay_options(lowers: list[str], upper: str | None, work: str | None,
                           extra: Mapping[str, str | None] | None) -> str:
    """mount(2)'s option string for an overlay: a flag (value None) is its
    bare name, as the new mount API's FSCONFIG_SET_FLAG sets it."""
    opts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    opts += [k if v is None else f"{k}={v}" for k, v in (extra or {}).items()]
    return ",".join(opts)


def overlay_max_lowers() -> int:
    """The kernel's limit on overlay lower layers (measured: 500 here)."""
    return 500


class PathEscape(OSError):
    """A relative symlink or ``..`` climbs above the root (``clamp=False``)."""


def path_in_root(root: Path, rel: str, *, clamp: bool = True) -> Path:
    """Resolve ``rel`` inside ``root`` without ever leaving it (symlinks are
    resolved as if ``root`` were ``/``), like libpathrs / securejoin.

    ``clamp``: a ``..`` above the root stays at the root (as the kernel does
    for ``/..``); with ``clamp=False`` it raises PathEscape instead.  More
    than 40 symlinks raise OSError(ELOOP)."""
    root = Path(root)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            elif not clamp:
                raise PathEscape(errno.EXDEV, "escapes the root", rel)
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, "too many symlinks", str(candidate))
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


# -- process attributes for the builtin executor (prctl, capabilities) --------

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1

CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
                    ctypes.c_ulong(arg5)),
        "prctl",
    )


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def drop_bounding_set(keep: list[str]) -> None:
    """Drop every capability not named in ``keep`` from the bounding set."""
    wanted = {CAPABILITIES[c] for c in keep if c in CAPABILITIES}
    for cap in range(cap_last_cap() + 1):
        if cap not in wanted:
            prctl(PR_CAPBSET_DROP, cap)


# -- detached mounts: move a mount into another mount namespace (volumes) -----
# Appended by the volume manager: a snapshot of a volume that a running
# container uses swaps the container's mount for a new overlay.  The overlay is
# mounted in the host namespace, cloned into a detached tree with open_tree(),
# and a forked child that setns()-ed into the container's namespace attaches it
# with move_mount().
SYS_open_tree = 428
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000


def open_tree_clone(path: str | os.PathLike[str]) -> int:
    """A detached copy of the mount at ``path`` (same superblock), as an fd."""
    return _check(
        _libc.syscall(SYS_open_tree, -100, _b(str(path)), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
        "open_tree",
        path,
    )


def move_mount_fd(fd: int, target: str | os.PathLike[str]) -> None:
    """Attach the detached mount ``fd`` at ``target`` in the caller's namespace."""
    _check(
        _libc.syscall(SYS_move_mount, fd, b"", -100, _b(str(target)), MOVE_MOUNT_F_EMPTY_PATH),
        "move_mount",
        target,
    )


def loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (a new
    network namespace starts with it down; runc does the same)."""
    import fcntl
    import socket
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


# Kernel interfaces that look like files (proc, sysfs, debugfs, tracefs,
# securityfs, cgroup v1/v2, bpf, configfs, efivarfs): reading them is not
# reading data (/proc/self/mem fails with EIO; others block or change state).
PSEUDO_FS = {0x9FA0, 0x62656572, 0x64626720, 0x74726163, 0x73636673, 0x27E0EB, 0x63677270,
             0xCAFE4A11, 0x62656570, 0xDE5E81E4}


def fs_type(path: str | os.PathLike[str]) -> int:
    """statfs(2)'s f_type (the file system's magic number) for ``path``."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type (a long) comes first
    _check(_libc.statfs(os.fsencode(path), buf), "statfs", path)
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little")
