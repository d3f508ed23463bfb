"""A recording stand-in for the kernel seam (runtime/sys.py), for unit tests
of planning logic only: which overlays a caller mounts, with which layers in
which order, what it unmounts, and in which order.

``with recording() as rec:`` replaces, for its duration, every function of
``volmerge.runtime.sys`` that changes kernel state (mount, umount, unshare,
setns, pivot_root, ...) by one that appends a :class:`Call` to ``rec.calls``
and keeps a mount table of its own, which ``mounts_below`` / ``is_mountpoint``
/ ``umount_tree`` read.  Nothing reaches the kernel: the module's libc handle
is swapped for one that fails the test on any call that is not recorded, so
a planning test cannot mount by accident and runs as any user.

What the kernel does with those calls is tested for real elsewhere (as root,
with real overlays); a test that uses this records a plan, never a result.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from volmerge.runtime import sys as rsys


@dataclass(frozen=True)
class Call:
    """One recorded call: the function's name and its arguments (paths as str)."""

    name: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)


def _norm(v: Any) -> Any:
    return os.fspath(v) if isinstance(v, os.PathLike) else v


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)  # mount points, in mount order

    def named(self, *names: str) -> list[Call]:
        """The calls of these functions, in order."""
        return [c for c in self.calls if c.name in names]

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, tuple(_norm(a) for a in args),
                               tuple(sorted((k, _norm(v)) for k, v in kwargs.items()))))

    # -- the recorded functions (same signatures as runtime/sys.py) ------------
    def mount(self, source: Any, target: Any, fstype: Any, flags: int = 0,
              data: Any = None) -> None:
        self._record("mount", source, target, fstype, flags, data)
        if not flags & (rsys.MS_REMOUNT | rsys.MS_PRIVATE | rsys.MS_SLAVE | rsys.MS_SHARED):
            self.mounted.append(os.path.realpath(target))

    def mount_overlay(self, target: Any, lowers: list[str], upper: str | None = None,
                      work: str | None = None, *, readonly: bool = False,
                      extra: dict[str, str] | None = None) -> None:
        self._record("mount_overlay", target, tuple(lowers), upper, work, readonly=readonly,
                     extra=None if extra is None else tuple(sorted(extra.items())))
        self.mounted.append(os.path.realpath(target))

    def umount(self, target: Any, flags: int = 0) -> None:
        self._record("umount", target, flags)
        real = os.path.realpath(target)
        if real not in self.mounted:
            raise OSError(errno.EINVAL, "umount: not mounted", os.fspath(target))
        # the top-most mount at that point goes (the list is in mount order)
        del self.mounted[len(self.mounted) - 1 - self.mounted[::-1].index(real)]

    def mounts_below(self, path: Any) -> list[str]:
        base = os.path.realpath(path)
        found = [m for m in self.mounted if m == base or m.startswith(base.rstrip("/") + "/")]
        return sorted(found, key=lambda m: m.count("/"), reverse=True)

    def _recorded(self, name: str, result: Any = None):  # type: ignore[no-untyped-def]
        def fn(*args: Any, **kwargs: Any) -> Any:
            self._record(name, *args, **kwargs)
            return result
        return fn


class _NoKernel:
    """Stands in for the libc handle while recording: any call that the
    recorder does not cover fails the test instead of reaching the kernel.
    ``statfs`` (a read-only query) still answers."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name == "statfs":
            return self._real.statfs
        raise AssertionError(f"runtime.sys called libc {name}() while recording: "
                             "record it in tests/sysrec.py or test it as root")


# Functions of runtime/sys.py replaced while recording; the rest (umount_tree,
# is_mountpoint, make_private, path_in_root, ...) run unchanged on top of them.
_RECORDED = ("unshare", "setns", "pivot_root", "sethostname", "prctl", "drop_bounding_set",
             "open_tree_clone", "move_mount_fd", "loopback_up")


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    rec = Recorder()
    replaced: dict[str, Any] = {
        "mount": rec.mount, "umount": rec.umount, "mount_overlay": rec.mount_overlay,
        "mounts_below": rec.mounts_below, "_libc": _NoKernel(rsys._libc),
    }
    replaced.update({n: rec._recorded(n, -1 if n == "open_tree_clone" else None)
                     for n in _RECORDED})
    saved = {n: getattr(rsys, n) for n in replaced}
    for n, fn in replaced.items():
        setattr(rsys, n, fn)
    try:
        yield rec
    finally:
        for n, fn in saved.items():
            setattr(rsys, n, fn)
