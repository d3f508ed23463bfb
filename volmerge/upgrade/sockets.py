"""The hand-over of a socket-activated container's listening sockets
(``run --socket-activate``, runtime/sockholder.py) to its successor.

The sockets are held by a holder process that the container owns, not by
the container's run, so they stay open while the old version stops and the
new one starts: connections made meanwhile wait in the socket's backlog and
the successor accepts them.  These steps move the ownership (one rename,
atomic) from the old container to the new one, beside the hand-over of its
address and published ports (steps.TakeOverNetwork); their reverse moves it
back, so a failed or crashed upgrade or rollback leaves the sockets with
the container that runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .steps import Step, Tx, find_container

if TYPE_CHECKING:
    from volmerge.runtime.options import RunOptions

    from .ctx import Ctx


@dataclass(frozen=True)
class HandOverSockets(Step):
    """``from_id``'s listening sockets go to ``to_id`` (empty: the successor
    this run created, ``name``)."""

    kind = "hand-over-sockets"
    from_id: str
    name: str
    to_id: str = ""

    def describe(self) -> str:
        return f"hand {self.name}'s listening sockets (--socket-activate) to its successor"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from volmerge.runtime import sockholder

        to = self.to_id or tx.new_id
        assert to, "the hand-over runs after the successor is created"
        sockholder.hand_over(ctx.store.root, self.from_id, to)
        return {"to_id": to}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return HandBackSockets(from_ref=data.get("to_id") or self.to_id or self.name,
                               to_id=self.from_id)


@dataclass(frozen=True)
class HandBackSockets(Step):
    """The listening sockets of ``from_ref`` (a container id, or the
    successor's name when the hand-over was cut short) go back to
    ``to_id``, if it has them."""

    kind = "hand-back-sockets"
    from_ref: str
    to_id: str

    def describe(self) -> str:
        return f"hand the listening sockets back to {self.to_id[:12]}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        from volmerge.runtime import sockholder

        c = find_container(ctx, self.from_ref)
        cid = c.id if c is not None else self.from_ref
        if cid != self.to_id and all(ch in "0123456789abcdef" for ch in cid):
            sockholder.hand_over(ctx.store.root, cid, self.to_id)
        return {}


def hand_over(opts: RunOptions, from_id: str, name: str, to_id: str = "") -> list[Step]:
    """The step that hands the sockets over, for a container that has any."""
    if not opts.socket_activate:
        return []
    return [HandOverSockets(from_id=from_id, name=name, to_id=to_id)]
