"""SQL data replay: carry a live database's rows into a new version's schema.

Public API (the upgrade transaction and the CLI use it)::

    from volmerge.strategies.sql import plan_replay, replay, read_schema
    with plan_replay(src, schema=new, base=old, maps={...}, defaults={...}) as plan:
        print(plan.to_json())        # the dry run
        result = replay(plan, dst)   # -> ReplayResult
"""

from __future__ import annotations

from .plan import ReplayPlan, plan_replay
from .readers import read_schema
from .replay import ReplayResult, replay
from .schema import Schema

__all__ = ["plan_replay", "replay", "read_schema", "ReplayPlan", "ReplayResult", "Schema"]
