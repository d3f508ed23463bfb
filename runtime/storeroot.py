"""The store root on disk: which path may be a store, and its directories
and database files made with the right owner and modes.

Layout below the root (default ``/var/lib/volmerge``; ``--root`` or
``VOLMERGE_ROOT`` override)::

    state.db          SQLite (WAL, foreign keys) shared by every component
    blobs/sha256/     verified image blobs (manifests, configs, compressed layers)
    layers/<hex>/     extracted layers, overlay-ready (whiteouts as 0:0 devices)
    l/<short>         short symlinks to layer dirs, to keep overlay options small
    containers/<id>/  bundles, container layers, logs, supervisor state
    volumes/<name>/   volume layer stacks
    network/          network namespaces and hosts files
    locks/            flock files
    tmp/              work in progress; anything here at open is a crash leftover

The root and these directories are 0700, state.db 0600, whatever the umask:
they hold what root executes (setuid binaries of layers and volumes) and the
containers' ``-e`` values (docs/runtime.md, "Security: the store's permissions").

A root that another user could change is refused before anything is
created there (:func:`check_root`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from . import fsutil
from .errors import BadInput

DEFAULT_ROOT = "/var/lib/volmerge"
SUBDIRS = ("blobs/sha256", "layers", "l", "containers", "volumes", "network", "locks", "tmp")


def default_root() -> str:
    """``VOLMERGE_ROOT``, or the default when it is unset.  Set but empty it
    is given as is, for :func:`check_root` to refuse: ``VOLMERGE_ROOT=$DIR``
    with ``DIR`` unset must not open the machine's default store."""
    env = os.environ.get("VOLMERGE_ROOT")
    return DEFAULT_ROOT if env is None else env


def prepare_root(raw: str | os.PathLike[str]) -> Path:
    """The checked, absolute store root ``raw`` names, created or tightened
    (directories 0700, database files 0600, all ours)."""
    root = check_root(raw)
    make_root(root)
    secure_db_files(root)
    return root


# Kernel file systems a store can never live on (``--root /proc/self/x``).
_PSEUDO_FS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs",
    "configfs", "bpf", "pstore", "efivarfs", "mqueue", "binfmt_misc", "fusectl", "hugetlbfs",
})
# Files the store opens by fixed name in its root: never through a link.
DB_FILES = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")
# What a store root holds: anything else means it is some other directory.
_STORE_NAMES = frozenset({*(d.split("/")[0] for d in SUBDIRS), *DB_FILES, "runc", "cli.sock"})


def check_root(raw: str | os.PathLike[str]) -> Path:
    """The absolute store root ``raw`` names, or BadInput: refused before anything
    is created when it is empty, on a kernel file system, not a directory, owned by
    another user or writable by others, or reached through a directory or symlink
    that someone other than root (or us) could change.

    Whoever can write the root or a directory above it can swap what root later
    mounts, executes and trusts (layers, volumes, state.db): like OpenSSH's
    StrictModes, every step of the path must be root's (or ours) and, when
    writable by others, sticky (``/tmp``)."""
    text = os.fspath(raw)
    if not text.strip():
        raise BadInput("store root is empty: give --root (or VOLMERGE_ROOT) an absolute path, "
                       f"or leave it unset for {DEFAULT_ROOT}")
    if "\0" in text:
        raise BadInput(f"store root {text!r} contains a NUL byte")
    root = Path(text)
    if not root.is_absolute():
        root = Path.cwd() / root
    real, missing = _walk_checked(root)
    kernel = any(str(real) == k or str(real).startswith(k + "/") for k in ("/proc", "/sys"))
    # An existing store (its database was written there) is on a real file
    # system: only a new root costs the look at the mount table.
    known = not missing and os.path.lexists(real / "state.db")
    fs = None if known else _fs_type(real)
    if kernel or fs in _PSEUDO_FS:
        raise BadInput(f"store root {root} is on the kernel's {fs or 'pseudo'} file system: "
                       f"give --root a directory on a disk, e.g. {DEFAULT_ROOT}")
    if not missing:
        st = os.stat(real)
        if not stat.S_ISDIR(st.st_mode):
            raise BadInput(f"store root {root} is not a directory")
        _check_root_dir(root, st)
        if not known:
            _check_is_store(root, real)
    return root


def _check_is_store(root: Path, real: Path) -> None:
    """Opening tightens the root to 0700: refuse ``/`` or a directory with
    something else in it (``--root /etc``), which that would break."""
    if real == Path("/"):
        raise BadInput("store root / is refused: give --root a directory of its own")
    with os.scandir(real) as it:
        strange = sorted(e.name for e in it if e.name not in _STORE_NAMES)
    if strange:  # (a store another process is creating has only its own names)
        raise BadInput(f"store root {root} is a non-empty directory that is not a volmerge store "
                       f"(it has {strange[0]!r}): give --root an empty or new directory")


def _walk_checked(path: Path) -> tuple[Path, bool]:
    """Resolve ``path`` one component at a time, as the kernel would, checking
    every directory above the last component and every symlink on the way
    (:func:`_check_parent`).  Returns the real path of what exists and whether
    a trailing part is missing (to be created)."""
    todo = list(path.parts[1:])
    cur = Path("/")
    _check_parent(path, cur, os.stat(cur))
    hops = 0
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            cur = cur.parent
            continue
        nxt = cur / name
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            return nxt, True
        except OSError as exc:
            raise BadInput(f"store root {path}: {nxt}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            _check_owner(path, nxt, st, "symlink")
            hops += 1
            if hops > 40:
                raise BadInput(f"store root {path}: too many levels of symlinks")
            target = Path(os.readlink(nxt))
            if target.is_absolute():
                cur = Path("/")
                todo = list(target.parts[1:]) + todo
            else:
                todo = list(target.parts) + todo
            continue
        if todo:
            if not stat.S_ISDIR(st.st_mode):
                raise BadInput(f"store root {path}: {nxt} is not a directory")
            _check_parent(path, nxt, st)
        cur = nxt
    return cur, False


def _check_owner(root: Path, p: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise BadInput(
            f"store root {root}: {what} {p} is owned by {_user(st.st_uid)}, who could swap the "
            f"store; only root may own the path to a store root (use another --root)")


def _check_parent(root: Path, p: Path, st: os.stat_result) -> None:
    _check_owner(root, p, st, "directory")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise BadInput(
            f"store root {root}: directory {p} (mode {stat.S_IMODE(st.st_mode):04o}) is writable "
            f"by others, who could swap the store; fix: chmod go-w {p}")


def _check_root_dir(root: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise BadInput(
            f"store root {root} is owned by {_user(st.st_uid)}, not {_user(os.geteuid())}: that "
            f"user could make root run anything; fix: chown {_user(os.geteuid())} {root} "
            f"(after checking its contents) or use another --root")
    if st.st_mode & 0o022:
        raise BadInput(
            f"store root {root} (mode {stat.S_IMODE(st.st_mode):04o}) is writable by group or "
            f"others, who could plant files root trusts; fix: chmod 700 {root} (after checking "
            f"its contents) or use another --root")


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _fs_type(path: Path) -> str | None:
    """The file system type of the mount holding ``path`` (an existing path),
    from /proc/self/mountinfo (None when it cannot be read)."""
    best, fs = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                mp = _unescape(fields[4])
                if (str(path) == mp or str(path).startswith(mp.rstrip("/") + "/")) \
                        and len(mp) >= len(best):
                    best, fs = mp, fields[sep + 1]
    except (OSError, ValueError, IndexError):
        return None
    return fs


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def make_root(root: Path) -> None:
    """Create the root (0700) and any missing parent (0755 at most, as
    ``mkdir -p``), then the subdirectories, all 0700 whatever the umask;
    an existing store (0711/0755 before) is tightened.  A subdirectory that
    is a symlink or not ours is refused."""
    missing: list[Path] = []
    p = root
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700 if d == root else 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise BadInput(f"cannot create store root {root}: {d}: {exc.strerror}") from None
    if missing:  # someone may have raced us for a missing part: check it all again
        check_root(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _check_root_dir(root, st)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        for sub in SUBDIRS:
            _private_dir(root, fd, sub)
    finally:
        os.close(fd)


def _private_dir(root: Path, rootfd: int, sub: str) -> None:
    """``root/sub`` as a 0700 directory of ours, created if missing, never
    reached through a symlink."""
    fd = os.dup(rootfd)
    try:
        for part in sub.split("/"):
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                try:
                    nfd = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                    nfd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise BadInput(f"store directory {root / sub} is a symlink or not a directory "
                               f"({exc.strerror}); remove it") from None
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise BadInput(f"store directory {root / sub} is owned by {_user(st.st_uid)}; "
                               f"remove it")
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _private_file(root: Path, dirfd: int, name: str, *, create: bool) -> None:
    """``name`` in the root as a 0600 regular file of ours, never reached through a
    symlink, created empty when ``create``; absent is fine otherwise.

    An existing file is looked at through an ``O_PATH`` descriptor: closing any
    other descriptor of a database file drops every POSIX lock this process
    holds on it, so a second Store opened where a connection is live (tests,
    the demo, a forked supervisor) would release that connection's locks under
    it (SQLite's "posix advisory locks cancelled by close()"), and another
    process could then reset the shared memory it maps (SIGBUS) or write
    under its transaction.  Closing an ``O_PATH`` descriptor releases no lock."""
    what = f"store file in {root}:"
    if create:
        try:
            fd = fsutil.open_private(name, os.O_RDONLY | os.O_CREAT | os.O_EXCL, dir_fd=dirfd,
                                     what=what)
        except FileExistsError:
            pass
        else:  # new: nobody can hold a lock on it yet
            os.close(fd)
            return
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        return
    try:
        fsutil.make_private(fd, name, what)  # fstat of the link itself when it is one
    finally:
        os.close(fd)


def secure_db_files(root: Path) -> None:
    """state.db and its WAL/shared-memory/journal files: 0600, ours, never a
    link (they hold ``-e`` secrets).  SQLite gives the files it creates
    the database's mode, so creating state.db 0600 first covers them."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in DB_FILES:
            _private_file(root, fd, name, create=name == "state.db")
    finally:
        os.close(fd)
