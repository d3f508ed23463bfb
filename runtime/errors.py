"""Error roots of the runtime.

Every error carries the process exit code the CLI must use (docs/architecture.md):
``2`` bad input, nothing changed; ``1`` not done, everything rolled back or
left untouched.  Messages are one line, meant for an operator.
"""

from __future__ import annotations


class CodedError(Exception):
    """An error the CLI reports as one line and ``exit_code``: the common root
    of the three layers' error roots (RuntimeFault here, MergeError in
    strategies.errors, VolmergeError in volmerge.errors), which are siblings so
    that catching one layer's errors never catches another's."""

    exit_code = 3

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split("\n"))


class RuntimeFault(CodedError):
    """Root of runtime errors.  Anything that is not a subclass is a bug."""


class BadInput(RuntimeFault):
    """The caller asked for something invalid; nothing was changed."""

    exit_code = 2


class NotFound(BadInput):
    """A named object (image, container, layer, network) does not exist."""


class Conflict(BadInput):
    """The request clashes with existing state (name taken, object in use)."""


class NotDone(RuntimeFault):
    """The operation did not happen and everything was left or put back."""

    exit_code = 1
