"""``compose upgrade``: every service whose image changed, upgraded by
volmerge's per-container upgrade (snapshot, merge, SQL replay, health), in
dependency order (a database before the application that depends on it).

The services form one unit, one journaled transaction of the runner
(stacktx.py over volmerge/upgrade/group.py): every service's steps in one
journal, so a failure anywhere undoes every service's steps in reverse (the
stack is exactly as before, data included), and a crash is finished or
undone by plain ``volmerge recover``.  ``compose rollback`` and ``--rehearse``
are one run of the same kind.  The stack generations (history.py) read the
journal's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from volmerge.errors import BadInput, NotDone
from volmerge.runtime.errors import BadInput as RuntimeBadInput

from . import convert
from .stack import Stack

Say = Callable[[str], None]


@dataclass(frozen=True)
class Change:
    """One service to upgrade: its container, from which image to which."""

    service: str
    container: str
    from_ref: str
    to_ref: str
    stop_timeout: float


def changes(stack: Stack, services: list[str] | None = None, *, pull: bool = False) -> list[Change]:
    """The services (in dependency order) whose container runs another image
    than the file's reference names now (another reference, or the same
    reference pulled to a new digest)."""
    out = []
    for name in stack.with_dependencies(services or ()):
        svc = stack.project.services[name]
        ref = str(svc["image"])
        c = stack.container_of(name)
        if c is None:
            continue  # `up` creates it; nothing to upgrade
        if pull:
            stack.pull_one(ref)
        try:
            image_id = stack.ctx.images.get(ref).id
        except RuntimeBadInput:
            stack.pull_one(ref)
            image_id = stack.ctx.images.get(ref).id
        if c.image_ref != ref or c.image_id != image_id:
            out.append(Change(name, c.name, c.image_ref, ref, convert.stop_timeout(svc, name)))
    return out


def preview(stack: Stack, todo: list[Change], health_timeout: float = 60.0) -> list[dict[str, Any]]:
    """The single upgrade's preview of each service, in order."""
    from volmerge.upgrade import preview as one

    from .stacktx import options

    return [{"service": ch.service, **one(stack.ctx, options(ch, health_timeout))}
            for ch in todo]


def rehearse(stack: Stack, todo: list[Change], health_timeout: float = 60.0,
             say: Say | None = None) -> list[dict[str, Any]]:
    """The whole stack's upgrade rehearsed as one run: clones of every
    service's volumes, the copies started in order on a private network of
    their own (each reaches the others' copies by service name, nothing
    reaches the live services, no port is published), then everything thrown
    away.  NotDone naming the first service whose rehearsal failed."""
    from volmerge.upgrade import group
    from volmerge.upgrade.journal import new_id
    from volmerge.upgrade.merge import summary
    from volmerge.upgrade.runner import Failed

    from . import stacktx

    say = say or stack.say
    net = stacktx.network_name(stack.project.name)
    try:
        done = stacktx.run(
            stack, lambda: stacktx.rehearsal_members(stack, todo, health_timeout, net),
            [ch.container for ch in todo], kind=group.REHEARSAL, verb="Rehearsing",
            passed="Rehearsal passed", say=say, jid=new_id(),
            head=lambda: (group.PrivateNetwork(name=net),))
    except Failed as exc:
        if getattr(exc.cause, "exit_code", 3) == 2:
            raise exc.cause from None
        i = stacktx.failed_member(exc)
        where = f"at service {todo[i].service}" if i is not None else "before any service"
        raise NotDone(f"stack rehearsal failed {where}: {exc.reason}; "
                      "copies, clones and network thrown away") from None
    say(f"Service {todo[-1].service}  Rehearsal passed")
    out = []
    for r in stacktx.part_reports(done):
        part, tx = r["part"], r["tx"]
        out.append({"service": part["label"], "ok": True, "reason": "",
                    "plan": {k: v for k, v in part["plan"].items() if k != "id"},
                    "volumes": tx.reports, "timings": tx.timings, "summary": summary(tx.reports),
                    "network": net})
    return out


def upgrade(stack: Stack, todo: list[Change], *, health_timeout: float = 60.0,
            say: Say | None = None) -> list[dict[str, Any]]:
    """Upgrade every service as one transaction; on a failure every service
    is back as it was and NotDone names the service that failed.  The stack
    generation is written ``in-progress`` just before the journal begins and
    settled from the journal after it (history.py)."""
    from volmerge.upgrade import group
    from volmerge.upgrade.journal import new_id
    from volmerge.upgrade.merge import summary
    from volmerge.upgrade.runner import Failed
    from volmerge.volumes import faults

    from . import history, stacktx

    say = say or stack.say
    store = stack.ctx.store
    project = stack.project.name
    box: dict[str, int] = {}

    def before(p: Any) -> None:
        steps = [history.ServiceStep(ch.service, ch.container, ch.from_ref, ch.to_ref,
                                     history.current_gen(store, ch.container), None)
                 for ch in todo]
        box["gen"] = history.begin(store, project, steps, journal_id=p.jid)
        faults.point("compose.begun")

    with _locked(stack):
        recover(stack, say=say, locked=True)
        try:
            done = stacktx.run(stack, lambda: stacktx.upgrade_members(stack, todo, health_timeout),
                               [ch.container for ch in todo], kind=group.STACK, verb="Upgrading",
                               say=say, jid=new_id(), before=before)
        except Failed as exc:
            history.settle(store, project)
            i = stacktx.failed_member(exc)
            failed = todo[i].service if i is not None else "none"
            names = ", ".join(ch.service for ch in todo[:i or 0]) or "none"
            raise NotDone(f"stack upgrade stopped at service {failed}: {exc.reason}; rolled back "
                          f"the services upgraded before it ({names}) in the same transaction",
                          timings=exc.prepared.tx.timings) from None
        except BaseException:
            history.settle(store, project)  # a row whose journal never began: failed
            raise
        history.settle(store, project)
    gen = box["gen"]
    out = []
    for r in stacktx.part_reports(done):
        part, tx = r["part"], r["tx"]
        plan = part["plan"]
        (g,) = store.db.execute("SELECT gen FROM generations WHERE journal_id = ?",
                                (plan["id"],)).fetchone()
        say(f"Service {part['label']}  Upgraded (generation {g})")
        out.append({"service": part["label"], "stack_generation": gen, "id": done.id,
                    "container": part["container"], "from": plan["from"]["image"],
                    "to": plan["to"]["image"], "generation": g, "volumes": tx.reports,
                    "timings": tx.timings, "summary": summary(tx.reports)})
    say(f"Stack {project}  generation {gen}")
    return out


def recover(stack: Stack, *, say: Say | None = None, locked: bool = False
            ) -> list[tuple[int, str]]:
    """The stack's journal finished or undone (as plain ``volmerge recover``
    does, which every command runs first), then each stack generation it
    left open settled from it: ``failed`` (undone) or ``current``
    (committed).  Rows written before stacks had one journal (no
    ``journal_id``) are put back service by service."""
    from volmerge.upgrade import recover as recover_journals

    from . import history, stacktx

    if not locked:
        with _locked(stack):
            return recover(stack, say=say, locked=True)
    say = say or stack.say
    recover_journals(stack.ctx, container=stacktx.journal_name(stack.project.name))
    out = _recover_legacy(stack, say)
    for gen, state in history.settle(stack.ctx.store, stack.project.name):
        if state != "rolled-back":
            say(f"Stack {stack.project.name}  generation {gen} was cut short: "
                + ("undone" if state == "failed" else "finished"))
        out.append((gen, state))
    return out


def _recover_legacy(stack: Stack, say: Say) -> list[tuple[int, str]]:
    """An ``in-progress`` row of the per-service scheme: every service whose
    generation moved rolled back to the one it had, data included."""
    from volmerge.upgrade import recover as recover_one
    from volmerge.upgrade import rollback

    from . import history

    store = stack.ctx.store
    out = []
    for g in history.generations(store, stack.project.name):
        if g.state != "in-progress" or g.journal_id is not None:
            continue
        say(f"Stack {stack.project.name}  generation {g.gen} was cut short: rolling it back")
        moved = []
        for s in g.services:
            recover_one(stack.ctx, container=s.container)
            if history.current_gen(store, s.container) != s.from_gen:
                moved.append((Change(s.service, s.container, s.from_image, s.to_image,
                                     _grace(stack, s.service)), s.from_gen))
        failed = []
        for ch, gen in reversed(moved):
            try:
                rollback(stack.ctx, ch.container, to=gen, discard_new_data=True,
                         stop_timeout=ch.stop_timeout)
            except Exception as exc:  # noqa: BLE001 - the others are still rolled back
                say(f"Service {ch.service}  rollback failed: {exc}")
                failed.append(ch.service)
        if failed:
            raise NotDone(f"stack generation {g.gen}: {', '.join(failed)} could not be rolled "
                          "back (see above)")
        history.mark(store, stack.project.name, g.gen, "failed")
        out.append((g.gen, "failed"))
    return out


def _locked(stack: Stack) -> Any:
    """One stack upgrade, rollback or recovery of a project at a time."""
    from .stacktx import project_lock

    return project_lock(stack.ctx.store, stack.project.name)


def rollback_stack(stack: Stack, *, discard_new_data: bool = False,
                   keep_new_data_as: str | None = None,
                   say: Say | None = None) -> dict[str, Any]:
    """The last stack upgrade not yet rolled back, undone as one transaction:
    its services back to the generations they had, newest first.  Data
    written since is refused (each service's rollback counts it) unless
    ``discard_new_data``, or kept as volumes ``KEEP-SERVICE[-VOLUME]``
    (``keep_new_data_as``); all or nothing."""
    from volmerge.errors import NotFound
    from volmerge.upgrade import group, rollback
    from volmerge.upgrade.journal import new_id
    from volmerge.upgrade.runner import Failed

    from . import history, stacktx

    if discard_new_data and keep_new_data_as:
        raise BadInput("--discard-new-data and --keep-new-data-as exclude each other")
    say = say or stack.say
    store = stack.ctx.store
    project = stack.project.name
    with _locked(stack):
        recover(stack, say=say, locked=True)
        gens = [g for g in history.generations(store, project) if g.state == "current"]
        if not gens:
            raise NotFound(f"project {project} has no stack upgrade to roll back")
        last = gens[-1]
        steps = [(Change(s.service, s.container, s.from_image, s.to_image,
                         _grace(stack, s.service)), s.from_gen) for s in last.services]
        if not (discard_new_data or keep_new_data_as):  # all or nothing: every service
            # checked before any moves
            lose = []
            for ch, gen in steps:
                plan = rollback(stack.ctx, ch.container, to=gen, dry_run=True)
                if any(d.get("paths") for d in (plan.get("new_data") or {}).values()):
                    lose.append(ch.service)
            if lose:  # bad input, as for one container's rollback: a choice is missing
                raise BadInput(f"rolling the stack back would lose data written since its "
                               f"upgrade by {', '.join(lose)}: pass --discard-new-data, or "
                               "--keep-new-data-as PREFIX to keep it as volumes "
                               "(nothing changed)")
        try:
            stacktx.run(stack, lambda: stacktx.rollback_members(stack, steps, discard_new_data,
                                                                keep_new_data_as),
                        [ch.container for ch, _g in steps], kind=group.STACK,
                        verb="Rolling back", say=say, jid=new_id(),
                        before=lambda p: history.rolling_back(store, project, last.gen, p.jid))
        except Failed as exc:
            if not exc.undone:
                raise NotDone(f"stack rollback of generation {last.gen} stopped after volumes "
                              f"were rolled back: {exc.reason}; `volmerge recover` finishes "
                              "it") from None
            raise NotDone(f"stack rollback of generation {last.gen} not done, nothing "
                          f"changed: {exc.reason}") from None
        history.settle(store, project)
    return last.to_json()


def _grace(stack: Stack, service: str) -> float:
    svc = stack.project.services.get(service)
    return convert.stop_timeout(svc, service) if svc else 10.0
