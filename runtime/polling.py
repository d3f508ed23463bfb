"""Waiting for something to become true, in one place, on tenacity.

Two shapes cover every polling loop: :func:`wait_until` calls a check until
it returns something truthy (a process exited, a file appeared, a state was
reached), :func:`retry` calls an operation again while it fails in a way
that passes (a busy database, a busy cgroup).  Both back off exponentially
from ``interval`` to ``max_interval`` and stop after ``timeout`` seconds
(``None``: never) or ``attempts`` calls, whichever comes first.

tenacity costs ~30 ms to import, so it is imported when a wait actually
starts, never at module import: callers on the start-up path call these
helpers only once a first, direct attempt has not succeeded.

A leaf: it imports nothing of the runtime (strategies may import it;
pyproject.toml, import-linter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _policy(timeout: float | None, attempts: int | None, interval: float,
            max_interval: float) -> dict[str, Any]:
    from tenacity import (
        stop_after_attempt,
        stop_after_delay,
        stop_never,
        wait_exponential,
    )

    stop: Any = stop_never
    if timeout is not None:
        stop = stop_after_delay(timeout)
    if attempts is not None:
        stop = stop_after_attempt(attempts) if stop is stop_never else stop | stop_after_attempt(attempts)
    return {"stop": stop,
            "wait": wait_exponential(multiplier=interval, min=interval, max=max_interval)}


def wait_until(check: Callable[[], T], *, timeout: float | None, attempts: int | None = None,
               interval: float = 0.01, max_interval: float = 0.1) -> T | None:
    """Call ``check`` until it returns a truthy value and return that value;
    None when ``timeout`` (or ``attempts``) runs out first.  ``check`` is
    always called at least once; an exception it raises is not retried but
    passes to the caller."""
    from tenacity import Retrying, retry_if_result

    retrying = Retrying(retry=retry_if_result(lambda r: not r),
                        retry_error_callback=lambda state: None,
                        **_policy(timeout, attempts, interval, max_interval))
    result = retrying(check)
    return result if result else None


def retry(op: Callable[[], T], *, when: Callable[[BaseException], bool],
          timeout: float | None = None, attempts: int | None = None,
          interval: float = 0.01, max_interval: float = 0.1,
          between: Callable[[], None] | None = None) -> T:
    """Call ``op`` again while it raises an exception for which ``when`` is
    true; its result once it succeeds.  When ``timeout`` or ``attempts`` run
    out, the last exception is raised as it was.  ``between`` runs before
    each new attempt (e.g. kill what keeps a cgroup busy)."""
    from tenacity import Retrying, retry_if_exception

    kw = _policy(timeout, attempts, interval, max_interval)
    if between is not None:
        kw["before_sleep"] = lambda state: between()
    retrying = Retrying(retry=retry_if_exception(when), reraise=True, **kw)
    return retrying(op)
