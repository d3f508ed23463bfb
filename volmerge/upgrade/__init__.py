"""The upgrade: plan, preview, rehearse, transaction, rollback, recovery.

An upgrade is a list of step objects (steps.py), each able to describe, apply
and undo itself (architecture.md, principle 1).  One runner (runner.py)
journals a transaction's steps durably before anything changes, walks them
forward and, on any failure, backward; ``recover`` does the same for a
transaction a crash cut short, finishing it through the finisher its kind
registered.  The kinds: the upgrade (transaction.py), the rollback
(rollback.py), the rehearsal (rehearsal.py) and a compose stack's run of
several of them as one journal (group.py), each importing the runner and
none another; importing this package registers all four.  A preview
runs the same planner and merges into nothing (dry run at the bottom, in the
tree merge's writer: architecture.md, principle 2).
"""

from __future__ import annotations

from . import group
from .journal import generations, history
from .plan import UpgradeOptions, UpgradePlan, make_plan
from .rehearsal import rehearse
from .rollback import rollback
from .runner import recover
from .transaction import preview, upgrade

__all__ = [
    "UpgradeOptions", "UpgradePlan", "generations", "group", "history", "make_plan", "preview",
    "recover", "rehearse", "rollback", "upgrade",
]
