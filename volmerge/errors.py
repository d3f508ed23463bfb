"""One error root for the product, with exit codes (architecture.md, principle 6).

``runtime`` and ``strategies`` cannot import this package, so they have error
roots of their own with the same ``exit_code`` contract; :func:`exit_code_of`
maps any of them.
"""

from __future__ import annotations


class VolmergeError(Exception):
    exit_code = 3

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return " ".join(self.message.split("\n"))


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
    from volmerge.runtime.errors import RuntimeFault
    from volmerge.strategies.errors import MergeError

    return (VolmergeError, RuntimeFault, MergeError)


def exit_code_of(exc: BaseException) -> int:
    return int(getattr(exc, "exit_code", 3))
