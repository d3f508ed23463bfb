"""Several containers' transactions as one: a compose stack's upgrade,
rollback or rehearsal is one journal (architecture.md, "The data flow of an
upgrade").

The caller (volmerge/compose/stacktx.py) prepares each container's run as
its kind would (an upgrade, a rollback, a rehearsal) and :func:`combine`
chains their steps into one :class:`~.runner.Prepared`, each part opened by
a :class:`Part` marker.  The runner journals the whole chain before any
change and walks it: a failure anywhere undoes every applied step of every
part in reverse (the stack is exactly as before), a crash is finished or
undone by plain ``volmerge recover`` from the journal alone.  The journal's
plan lists its ``members`` (so recovery takes every container's lock, and
a container's own transaction first finishes the stack's), each part's own
plan and kind, and what recovery needs (stop grace periods are in the steps).

At COMMIT the kind ``stack`` hands each part to its own kind's finisher,
found in the runner's table (so this module imports none of the kinds):
every service's new generation is recorded in the one database transaction
that marks the journal ``committed``.  The kind ``stack-rehearsal`` records
nothing and, once every part passed, undoes the whole chain (copies, clones
and the private network) and forgets the journal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import journal as jr
from . import runner
from .runner import Prepared
from .steps import Step, Tx

if TYPE_CHECKING:
    import sqlite3

    from .ctx import Ctx

STACK = "stack"
REHEARSAL = "stack-rehearsal"


@dataclass
class GroupTx(Tx):
    """The one :class:`Tx` the runner passes to every step, switched to the
    running part's own by its :class:`Part` marker (the merge reads that
    part's images and policy, the successor's id is that part's).
    :meth:`flush` puts the parts' reports and timings together."""

    parts: list[Tx] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    current: int | None = None
    entered: float = 0.0

    _FIELDS = ("new_image", "old_image", "policy", "reports", "new_id", "timings")

    def enter(self, index: int | None) -> None:
        if self.current is not None:
            part = self.parts[self.current]
            for f in self._FIELDS:
                setattr(part, f, getattr(self, f))
            part.timings["downtime"] = time.monotonic() - self.entered
        self.current = index
        if index is not None:
            for f in self._FIELDS:
                setattr(self, f, getattr(self.parts[index], f))
            self.entered = time.monotonic()

    def flush(self) -> None:
        """The last part closed; reports by volume, timings by part."""
        if self.current is None:
            return
        self.enter(None)
        self.reports = {k: v for p in self.parts for k, v in p.reports.items()}
        self.timings = {f"{label}.{k}": v for label, p in zip(self.labels, self.parts, strict=True)
                        for k, v in p.timings.items()}
        self.new_id = None


@dataclass(frozen=True)
class Part(Step):
    """Opens part ``index`` of a stack's run: one container's transaction."""

    kind = "part"
    index: int
    container: str
    part_kind: str

    def describe(self) -> str:
        return f"{self.container}: its {self.part_kind}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if isinstance(tx, GroupTx):
            tx.enter(self.index)
        return {}


@dataclass(frozen=True)
class PrivateNetwork(Step):
    """A bridge network of the rehearsal's own (the rehearsed copies reach
    each other by service name on it, nothing else); removed by its undo."""

    kind = "private-network"
    name: str

    def describe(self) -> str:
        return f"create the private network {self.name}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if not any(n.name == self.name for n in ctx.network.list()):
            ctx.network.create(self.name)
        return {}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return DropNetwork(name=self.name)


@dataclass(frozen=True)
class DropNetwork(Step):
    kind = "drop-network"
    name: str

    def describe(self) -> str:
        return f"remove the network {self.name}"

    def apply(self, ctx: Ctx, tx: Tx) -> dict[str, Any]:
        if any(n.name == self.name for n in ctx.network.list()):
            ctx.network.remove(self.name)
        return {}


@dataclass(frozen=True)
class Member:
    """One container's prepared run inside a stack's."""

    label: str            # the service, for reports and timings
    container: str
    kind: str             # upgrade | rollback | rehearsal
    prepared: Prepared


def combine(name: str, members: list[Member], *, head: tuple[Step, ...] = (),
            extra: dict[str, Any] | None = None) -> Prepared:
    """One run of every member's steps, in order, each after its
    :class:`Part` marker; ``head``: steps of the stack itself, first (the
    rehearsal's network).  The point of no return is the members' (a
    rollback's first volume rollback)."""
    steps: list[Step] = list(head)
    parts = []
    for i, m in enumerate(members):
        first = len(steps)
        steps.append(Part(index=i, container=m.container, part_kind=m.kind))
        steps += m.prepared.steps
        parts.append({"kind": m.kind, "label": m.label, "container": m.container,
                      "plan": m.prepared.plan, "first": first, "end": len(steps),
                      "from_image": m.prepared.from_image, "to_image": m.prepared.to_image})
    tx = GroupTx(parts=[m.prepared.tx for m in members], labels=[m.label for m in members])
    no_return = {m.prepared.point_of_no_return for m in members} - {None}
    return Prepared(
        steps=tuple(steps), from_image=", ".join(m.prepared.from_image for m in members),
        to_image=", ".join(m.prepared.to_image for m in members),
        plan={"stack": name, "members": [m.container for m in members], "parts": parts,
              **(extra or {})},
        tx=tx, point_of_no_return=next(iter(no_return), None),
    )


class PartJournal(jr.Journal):
    """One part of a stack's journal, as its own kind's finisher reads it:
    the part's plan, container and steps (indexes stay the stack journal's)."""

    def __init__(self, journal: jr.Journal, part: dict[str, Any]) -> None:
        super().__init__(journal.store, journal.id)
        self.part = part

    def plan(self) -> dict[str, Any]:
        plan: dict[str, Any] = self.part["plan"]
        return plan

    def row(self) -> Any:
        return {**dict(super().row()), "container": self.part["container"],
                "kind": self.part["kind"], "plan": None}

    def steps(self) -> list[jr.StepRow]:
        return [s for s in super().steps() if self.part["first"] < s.idx < self.part["end"]]


def parts(journal: jr.Journal) -> list[PartJournal]:
    return [PartJournal(journal, p) for p in journal.plan()["parts"]]


def _record(ctx: Ctx, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    """Every part's outcome (a service's new generation), by its own kind's
    finisher, in the database transaction of the stack's COMMIT.  After a
    crash past a point of no return recovery passes an empty Tx: only kinds
    that record from the journal alone (the rollback) have one."""
    if isinstance(tx, GroupTx):
        tx.flush()
    for i, part in enumerate(parts(journal)):
        sub = tx.parts[i] if isinstance(tx, GroupTx) else Tx()
        runner.finisher_for(part.part["kind"]).record(ctx, part, sub, db)


def _finish(ctx: Ctx, journal: jr.Journal) -> None:
    """Every part's post-commit work (idempotent), newest first."""
    for part in reversed(parts(journal)):
        runner.finisher_for(part.part["kind"]).finish(ctx, part)


def _throw_away(ctx: Ctx, journal: jr.Journal) -> None:
    """A stack rehearsal that passed: every step undone as journaled, the
    last service's copy first, the private network last."""
    runner.undo_journaled(ctx, journal, REHEARSAL)


def _no_record(ctx: Ctx, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    """A rehearsal changes nothing to record."""
    if isinstance(tx, GroupTx):
        tx.flush()


runner.register(STACK, runner.Finisher(record=_record, finish=_finish, timing="finish"))
runner.register(REHEARSAL, runner.Finisher(record=_no_record, finish=_throw_away, keep=False,
                                           timing="cleanup"))
