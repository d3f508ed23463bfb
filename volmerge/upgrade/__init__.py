"""The upgrade: plan, preview, rehearse, transaction, rollback, recovery.

An upgrade is a list of step objects (steps.py), each able to describe, apply
and undo itself (architecture.md, principle 1).  The transaction (transaction.py) journals the
plan durably before anything changes, walks the steps forward and, on any
failure, backward; ``recover`` does the same for a transaction a crash cut
short.  A preview runs the same planner and merges into nothing (dry run at
the bottom, in the tree merge's writer: architecture.md, principle 2).
"""

from __future__ import annotations

from .journal import generations, history
from .plan import UpgradeOptions, UpgradePlan, make_plan
from .recovery import recover
from .rollback import rollback
from .transaction import preview, rehearse, upgrade

__all__ = [
    "UpgradeOptions", "UpgradePlan", "generations", "history", "make_plan", "preview",
    "recover", "rehearse", "rollback", "upgrade",
]
