"""What ``pull`` and ``push`` share on the command line, without typer: the
progress display, the TLS options and the ``pull`` command's body, so the
typer command (cmd_registry.py) and the fast path (fastpull.py) run the same
code."""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from volmerge.runtime.registry.transport import TlsOptions


def human_size(n: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"


def tls_options(tls_verify: str, cert_dir: str | None) -> TlsOptions:
    """``--tls-verify`` and ``--cert-dir`` as the registry client's options."""
    from volmerge.runtime.errors import BadInput
    from volmerge.runtime.registry.transport import TlsOptions

    v = tls_verify.strip().lower()
    if v not in ("true", "false", "1", "0", "yes", "no"):
        raise BadInput(f"--tls-verify takes true or false, not {tls_verify!r}")
    return TlsOptions(verify=v in ("true", "1", "yes"), cert_dir=cert_dir)


class Display:
    """Per-layer progress: rich bars on stderr when it is a terminal, else
    plain lines on stdout (one per layer and state change, as ``docker pull``
    prints them), so stderr holds nothing but an error; nothing with --quiet."""

    _PLAIN = {"exists": "already present", "downloaded": "downloaded", "extracting": None,
              "pushed": "pushed", "done": None, "waiting": None, "downloading": None,
              "uploading": None, "mounted": "mounted from another repository"}

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = not quiet and sys.stderr.isatty()
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.said: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, digest: str, status: str, done: int, total: int) -> None:
        if self.quiet:
            return
        key = digest[7:19] if digest.startswith("sha256:") else digest[:12]
        with self.lock:
            if self.tty:
                self._bar(key, status, done, total)
            else:
                self._line(key, status, done, total)

    def _line(self, key: str, status: str, done: int, total: int) -> None:
        text = self._PLAIN.get(status)
        if text is None or self.said.get(key) == status:
            return
        self.said[key] = status
        size = f" ({human_size(total)})" if total and status in ("downloaded", "pushed") else ""
        sys.stdout.write(f"{key}: {text}{size}\n")
        sys.stdout.flush()

    def _bar(self, key: str, status: str, done: int, total: int) -> None:
        if self.progress is None:
            from .common import transfer_progress  # rich, on a terminal only

            self.progress = transfer_progress()
        label = {"exists": "already present", "downloaded": "verified", "done": "done",
                 "waiting": "waiting"}.get(status, status)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{key} {label:<16}", total=total or None)
        self.progress.update(self.tasks[key], completed=done, total=total or None,
                             description=f"{key} {label:<16}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def pull_command(open_store: Callable[[], Any], ref: str, *, platform: str | None, quiet: bool, tls_verify: str,
                 cert_dir: str | None, authfile: str | None) -> None:
    """``volmerge pull``: the image into the store ``open_store`` opens (once
    the options are read: bad input changes nothing), its progress and
    summary printed (only the image id with ``quiet``)."""
    if tls_verify.strip().lower() not in ("false", "0", "no"):
        from volmerge.runtime.registry import castore

        castore.preload()  # the system's CAs, on another core while the pull imports httpx
    from volmerge.runtime.images import ImageStore
    from volmerge.runtime.registry.pull import PullOptions
    from volmerge.runtime.registry.pull import pull as do_pull

    opts = PullOptions(platform=platform, tls=tls_options(tls_verify, cert_dir),
                       authfile=authfile)
    images = ImageStore(open_store())
    show = Display(quiet)
    t0 = time.monotonic()
    try:
        got = do_pull(images, ref, opts, show)
    finally:
        show.close()
    if quiet:
        print(got.image.digest)
        return
    print(f"Digest: {got.digest}")
    print(f"Pulled: {got.ref.local_tag or got.ref} (image {got.image.short_id}; "
          f"{got.downloaded} layer(s) downloaded, {got.reused} already present, "
          f"{time.monotonic() - t0:.1f}s)")
