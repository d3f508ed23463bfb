"""Finishing or undoing transactions that a crash interrupted.

Run by ``volmerge recover`` and at the start of every command that opens the
store (cheap when nothing is pending).  A journal still ``begun`` is undone
step by step in reverse (an upgrade) or finished (a rollback past its point
of no return); a ``committed`` one gets its post-commit work redone.
A transaction whose lock is still held belongs to a live process and is left alone.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from . import journal as jr
from . import steps as st


def recover(ctx: Any, container: str | None = None, *, locked: bool = False) -> list[dict[str, Any]]:
    done = []
    for row in jr.pending(ctx.store):
        if container is not None and row["container"] != container:
            continue
        with contextlib.ExitStack() as stack:
            if not locked:
                try:
                    stack.enter_context(ctx.store.lock(f"upgrade-{row['container']}", blocking=False))
                except BlockingIOError:
                    continue  # a live transaction
            done.append(_recover_one(ctx, row))
    return done


def _recover_one(ctx: Any, row: Any) -> dict[str, Any]:
    j = jr.Journal(ctx.store, row["id"])
    if row["state"] == "committed":
        if row["kind"] == "upgrade":
            from .transaction import finish_commit

            finish_commit(ctx, row["id"])
        else:
            from .rollback import finish_rollback

            finish_rollback(ctx, row["id"])
        return {"id": row["id"], "container": row["container"], "action": "finished commit"}
    steps = j.steps()
    started = [s for s in steps if s["state"] in ("applying", "applied")]
    if row["kind"] == "rollback" and any(
        s["kind"] == "volrollback" and s["state"] in ("applying", "applied") for s in steps
    ):
        from .rollback import roll_forward

        roll_forward(ctx, j, steps)
        return {"id": row["id"], "container": row["container"], "action": "rolled forward"}
    from .transaction import undo_steps

    applied = [(s["idx"], st.from_journal(s["kind"], s["args"]), s["undo"]) for s in started]
    error = "interrupted; undone by recover"
    try:
        undo_steps(ctx, j, applied)
    except Exception as exc:  # leave it begun: the next recover tries again
        return {"id": row["id"], "container": row["container"], "action": "failed", "error": str(exc)}
    prev = json.loads(row["timings"]) if row["timings"] else {}
    j.finish("rolled-back", error=error, timings=prev)
    return {"id": row["id"], "container": row["container"], "action": "rolled back"}
