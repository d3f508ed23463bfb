"""Error roots of the merge strategies (see runtime.errors for the contract)."""

from __future__ import annotations

from volmerge.runtime.errors import CodedError


class MergeError(CodedError):
    """Root of strategy errors.  Anything that is not a subclass is a bug."""


class BadInput(MergeError):
    """Unusable input (unparsable policy, hostile tree, malformed dump)."""

    exit_code = 2


class NotDone(MergeError):
    """Merge stopped (conflict, failed verification); nothing was written."""

    exit_code = 1
