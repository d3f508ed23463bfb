"""Error roots of the merge strategies (see runtime.errors for the contract)."""

from __future__ import annotations


class MergeError(Exception):
    """Root of strategy errors.  Anything that is not a subclass is a bug."""

    exit_code = 3

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return " ".join(self.message.split("\n"))


class BadInput(MergeError):
    """Unusable input (unparsable policy, hostile tree, malformed dump)."""

    exit_code = 2


class NotDone(MergeError):
    """Merge stopped (conflict, failed verification); nothing was written."""

    exit_code = 1
