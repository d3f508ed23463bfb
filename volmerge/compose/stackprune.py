"""``volmerge prune`` for compose stacks: a stack's history pruned together
with its services' generations, so that ``compose history`` lists only what
``compose rollback`` can still return to and the stack journals go as the
containers' own do (volmerge/upgrade/prune.py prunes one container).

What ``compose rollback`` reads: the newest stack generation in state
``current``; every service it upgraded goes back to the container
generation it had before (``from_gen``; None for a container's first
upgrade: the one that upgrade left, the ``_from_gen`` of its ``to_gen``),
which must be an earlier (``previous``) generation the container still has.
Once rolled back the row is ``rolled-back`` and the next ``current`` row
below it is the next one a rollback undoes.  So, per stack (:func:`select`,
pure):

- kept: every ``in-progress`` row (and any state this version does not
  know); the newest ``current`` row (the stack's current generation), and
  below it, newest first, the ``current`` rows whose every service's
  generation to return to is one the container keeps, up to the first one
  that is not (a rollback cannot get past it);
- ``failed`` and ``rolled-back`` rows go when their journal (the upgrade's;
  the rollback's) started before the stack's last committed transaction
  (the upgrade or rollback that made the current state): they tell nothing
  about how the current state came about.  Those since stay;
- the stack journals (``upgrade_journal`` rows named ``stack:PROJECT`` and
  their steps) go when finished (``done``, ``rolled-back``), named by no
  kept row (``journal_id``, ``rollback_journal``) and started before that
  last committed one, which stays: the rule of the containers' journals.

Which container generations are kept is what this run's prune of the
container keeps (the same ``--keep``), or, for a service container not
pruned in this run, every one it still has.  Pruning a stack prunes the
containers its rows name; pruning a container prunes, besides, the
history of the stacks it served in.

Locks are the stack's own (``compose-PROJECT`` and the journal name
``stack:PROJECT``, as ``compose upgrade`` and ``rollback`` take them) and,
for each container pruned, its transaction lock: never during a stack's or
a container's transaction.  An open stack journal (``begun``, ``committed``)
that recovery leaves open refuses the whole prune before anything changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from volmerge.errors import Conflict, NotFound

from . import history
from .history import ServiceStep, StackGeneration
from .stacktx import journal_name, project_lock

if TYPE_CHECKING:
    from volmerge.upgrade.ctx import Ctx
    from volmerge.upgrade.prune import PrunePlan

PREFIX = "stack:"
SETTLED = ("current", "failed", "rolled-back")


@dataclass(frozen=True)
class JournalInfo:
    """A stack journal as the selection reads it."""

    id: str
    state: str
    started: float


@dataclass(frozen=True)
class Selection:
    """What pruning one stack keeps and removes."""

    keep: tuple[int, ...]       # stack generations kept
    rows: tuple[int, ...]       # stack generations removed
    journals: tuple[str, ...]   # stack journals removed


def select(gens: Sequence[StackGeneration], journals: Sequence[JournalInfo],
           can_return: Callable[[ServiceStep], bool]) -> Selection:
    """The rule of the module's doc.  ``can_return``: whether the service's
    container keeps the generation a rollback of this step returns it to."""
    done = [j.started for j in journals if j.state == "done"]
    last = max(done) if done else None
    started = {j.id: j.started for j in journals}
    keep = {g.gen for g in gens if g.state not in SETTLED}
    current = sorted((g for g in gens if g.state == "current"), key=lambda g: g.gen, reverse=True)
    for i, g in enumerate(current):
        reachable = all(can_return(s) for s in g.services)
        if i == 0 or reachable:
            keep.add(g.gen)
        if not reachable:
            break
    for g in gens:
        if g.state in ("failed", "rolled-back"):
            jid = g.rollback_journal if g.state == "rolled-back" else g.journal_id
            when = started.get(jid or "", g.created)
            if last is None or when >= last:
                keep.add(g.gen)
    named = {j for g in gens if g.gen in keep for j in (g.journal_id, g.rollback_journal) if j}
    gone = [] if last is None else [
        j.id for j in sorted(journals, key=lambda j: j.started)
        if j.state in ("done", "rolled-back") and j.started < last and j.id not in named]
    return Selection(keep=tuple(sorted(keep)),
                     rows=tuple(g.gen for g in gens if g.gen not in keep),
                     journals=tuple(gone))


def _returnable(ctx: Ctx, pruned: dict[str, PrunePlan]) -> Callable[[ServiceStep], bool]:
    """``can_return`` against the generations each container keeps: what
    this run's prune of it keeps, or all it has."""
    from volmerge.upgrade import journal as jr
    from volmerge.upgrade.prune import kept

    cache: dict[str, tuple[set[int], dict[int, Any]]] = {}

    def reach(name: str) -> tuple[set[int], dict[int, Any]]:
        if name not in cache:
            gens = jr.generations(ctx.store, name)
            allowed = set(pruned[name].keep) if name in pruned else None
            cache[name] = ({g.gen for g in kept(gens, None) if g.state == "previous"
                            and (allowed is None or g.gen in allowed)},
                           {g.gen: g.volumes.get("_from_gen") for g in gens})
        return cache[name]

    def can_return(s: ServiceStep) -> bool:
        previous, left = reach(s.container)
        target = s.from_gen if s.from_gen is not None else left.get(s.to_gen or -1)
        return isinstance(target, int) and target in previous

    return can_return


def plan(ctx: Ctx, project: str, pruned: dict[str, PrunePlan]) -> Selection:
    rows = ctx.store.db.execute(
        "SELECT id, state, started FROM upgrade_journal WHERE container = ?",
        (journal_name(project),)).fetchall()
    return select(history.generations(ctx.store, project),
                  [JournalInfo(r["id"], r["state"], r["started"]) for r in rows],
                  _returnable(ctx, pruned))


def _apply(ctx: Ctx, project: str, sel: Selection) -> None:
    """One database transaction: the rows and the journals with their steps."""
    with ctx.store.transaction() as db:
        for gen in sel.rows:
            db.execute("DELETE FROM compose_generations WHERE project = ? AND gen = ?",
                       (project, gen))
        for jid in sel.journals:
            db.execute("DELETE FROM upgrade_steps WHERE journal_id = ?", (jid,))
            db.execute("DELETE FROM upgrade_journal WHERE id = ?", (jid,))


@contextlib.contextmanager
def _locked(ctx: Ctx, project: str) -> Iterator[None]:
    """The stack's locks, in the order ``compose upgrade`` takes them."""
    from volmerge.upgrade import runner

    with project_lock(ctx.store, project), runner.locked(ctx, journal_name(project)):
        yield


def _open(ctx: Ctx, project: str) -> list[str]:
    from volmerge.upgrade import journal as jr

    return [r["id"] for r in jr.pending(ctx.store) if r["container"] == journal_name(project)]


def _refuse_open(ctx: Ctx, project: str, *, locked: bool) -> None:
    """Conflict while the stack's journal is open: a live ``compose upgrade``
    or ``rollback`` holds the stack's locks (``locked``: we do); otherwise
    recovery could not close it."""
    ids = _open(ctx, project)
    if not ids:
        return
    if not locked:
        with _locked(ctx, project):
            pass
    raise Conflict(f"stack {project} has an unfinished upgrade or rollback ({ids[0]}): "
                   "run `volmerge recover` first")


def _named(project: str, exc: Conflict) -> Conflict:
    msg = str(exc)
    return Conflict(msg if msg.startswith("cannot prune") else
                    f"cannot prune {journal_name(project)}: {msg}")


def stacks(ctx: Ctx) -> dict[str, list[str]]:
    """Every project with stack history (rows or journals): the containers
    its rows name."""
    db = ctx.store.db
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    out: dict[str, list[str]] = {}
    if "upgrade_journal" in tables:
        for (c,) in db.execute("SELECT DISTINCT container FROM upgrade_journal "
                               "WHERE container LIKE 'stack:%' ORDER BY container"):
            out.setdefault(c[len(PREFIX):], [])
    if "compose_generations" in tables:
        for (p,) in db.execute("SELECT DISTINCT project FROM compose_generations"):
            names = out.setdefault(p, [])
            for g in history.generations(ctx.store, p):
                names += [s.container for s in g.services if s.container not in names]
    return dict(sorted(out.items()))


def _targets(ctx: Ctx, targets: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The containers to prune and the stacks (each with its containers to
    prune in its phase): all of them with no targets; a stack named
    ``stack:PROJECT`` with every container of its rows; a container with
    the stacks it served in."""
    from volmerge.upgrade import prune as one

    known = stacks(ctx)
    with_gens = set(one.names(ctx, []))
    if not targets:
        return sorted(with_gens), {p: [c for c in cs if c in with_gens] for p, cs in known.items()}
    named = [t[len(PREFIX):] for t in targets if t.startswith(PREFIX)]
    for p in named:
        if p not in known:
            raise NotFound(f"no such stack: {p} (no `compose upgrade` history)")
    containers = one.names(ctx, [t for t in targets if not t.startswith(PREFIX)]) \
        if len(named) < len(targets) else []
    chosen: dict[str, list[str]] = {}
    for p, cs in known.items():
        if p in named:
            chosen[p] = [c for c in cs if c in with_gens]
        elif any(c in containers for c in cs):
            chosen[p] = [c for c in cs if c in containers]
    every = list(dict.fromkeys([*containers, *(c for cs in chosen.values() for c in cs)]))
    return every, chosen


def prune(ctx: Ctx, targets: list[str], *, keep: int = 2,
          dry_run: bool = False) -> list[dict[str, Any]]:
    """Prune containers (names) and stacks (``stack:PROJECT``); with no
    targets every container with generations and every stack with history.
    One report per container, then one per stack (``{"stack": PROJECT,
    "keep", "generations", "journals", "dry_run"}``)."""
    from volmerge.upgrade import runner
    from volmerge.upgrade.prune import check_keep, prune_one

    check_keep(keep)
    containers, chosen = _targets(ctx, targets)
    for project in chosen:  # before anything changes
        try:
            _refuse_open(ctx, project, locked=False)
        except Conflict as exc:
            raise _named(project, exc) from None
    pruned: dict[str, PrunePlan] = {}
    reports: list[dict[str, Any]] = []
    for project, members in chosen.items():
        jname = journal_name(project)
        try:
            with _locked(ctx, project):
                runner.recover(ctx, container=jname, locked=True)
                _refuse_open(ctx, project, locked=True)
                history.settle(ctx.store, project)
                for name in members:
                    if name not in pruned:
                        pruned[name] = prune_one(ctx, name, keep=keep, dry_run=dry_run,
                                                 held=(jname,))
                sel = plan(ctx, project, pruned)
                if not dry_run:
                    _apply(ctx, project, sel)
        except Conflict as exc:
            raise _named(project, exc) from None
        reports.append({"stack": project, "keep": list(sel.keep), "generations": list(sel.rows),
                        "journals": list(sel.journals), "dry_run": dry_run})
    for name in containers:
        if name not in pruned:
            pruned[name] = prune_one(ctx, name, keep=keep, dry_run=dry_run)
    return [{**pruned[n].to_json(), "dry_run": dry_run} for n in containers] + reports


def project_targets(ctx: Ctx, project: str, containers: list[str]) -> list[str]:
    """``compose prune``: the project's stack (when it has history) and its
    containers that have generations; empty when there is nothing of it."""
    from volmerge.upgrade import prune as one

    with_gens = set(one.names(ctx, []))
    out = [journal_name(project)] if project in stacks(ctx) else []
    return out + [c for c in containers if c in with_gens]
