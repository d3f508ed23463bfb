"""What the code deliberately ignores is logged, never lost.

Clean-up that must go on after a failure (an undo, a teardown, a sweep)
catches broadly and carries on; each such place calls :func:`ignored`, which
logs the exception at debug level with its traceback under the module's
logger (the standard ``logging`` module). ``volmerge --debug`` or
``VOLMERGE_LOG=debug|info|warning`` shows the log on stderr.

``logging`` is imported on first use (~4 ms that a command which ignores
nothing, such as ``run --rm``, does not pay). A leaf: it imports nothing of
the runtime (strategies may import it; pyproject.toml, import-linter).
"""

from __future__ import annotations

import os

FORMAT = "volmerge: %(levelname)s: %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")


def ignored(name: str, what: str, exc: BaseException | None = None) -> None:
    """Log that ``what`` failed with ``exc`` and was deliberately let go
    (logger ``name``: the caller's ``__name__``)."""
    import logging

    log = logging.getLogger(name)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: ignored %s", what, _describe(exc), exc_info=exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "a failure"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def configure(level: str | None = None) -> None:
    """Send the log to stderr at ``level`` (default: ``$VOLMERGE_LOG``;
    nothing to do when neither is set)."""
    level = (level or os.environ.get("VOLMERGE_LOG") or "").lower()
    if not level:
        return
    if level not in LEVELS:
        from .errors import BadInput

        raise BadInput(f"invalid log level {level!r}: expected one of {', '.join(LEVELS)}")
    import logging

    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
