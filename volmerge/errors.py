"""One error root for the product, with exit codes (architecture.md, principle 6).

``runtime`` and ``strategies`` cannot import this package, so they have error
roots of their own; all three share runtime.errors.CodedError (the message on
one line and the ``exit_code`` contract), which :func:`exit_code_of` maps.
"""

from __future__ import annotations

from volmerge.runtime.errors import CodedError


class VolmergeError(CodedError):
    """Root of the product's errors.  Anything that is not a subclass is a bug."""


class BadInput(VolmergeError):
    """Bad input or usage: a one-line message, nothing changed (exit 2)."""

    exit_code = 2


class NotFound(BadInput):
    pass


class Conflict(BadInput):
    pass


class NotDone(VolmergeError):
    """Not done; everything rolled back or left untouched (exit 1)."""

    exit_code = 1


def known_error_types() -> tuple[type[BaseException], ...]:
    return (CodedError,)


def exit_code_of(exc: BaseException) -> int:
    return int(getattr(exc, "exit_code", 3))
