"""``compose upgrade``: every service whose image changed, upgraded by
volmerge's per-container upgrade (snapshot, merge, SQL replay, health), in
dependency order (a database before the application that depends on it).

The services form one unit: when a service's upgrade fails (its own
transaction has then put it back), every service upgraded before it in this
run is rolled back, newest first, to the generation it had, its data with
it (``rollback --discard-new-data``), so the stack is as it was.  Each
service's upgrade and rollback is a journaled transaction of the runner
(volmerge/upgrade/runner.py) and is crash-safe on its own; a crash *between*
services is not covered by one journal (docs/compose.md says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from volmerge.errors import NotDone
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


def _options(ch: Change, health_timeout: float) -> Any:
    from volmerge.upgrade import UpgradeOptions

    return UpgradeOptions(container=ch.container, to_image=ch.to_ref,
                          stop_timeout=ch.stop_timeout, health_timeout=health_timeout)


def preview(stack: Stack, todo: list[Change], health_timeout: float = 60.0) -> list[dict[str, Any]]:
    """The single upgrade's preview of each service, in order."""
    from volmerge.upgrade import preview as one

    return [{"service": ch.service, **one(stack.ctx, _options(ch, health_timeout))}
            for ch in todo]


def rehearse(stack: Stack, todo: list[Change], health_timeout: float = 60.0,
             say: Say | None = None) -> list[dict[str, Any]]:
    """Each service's upgrade rehearsed on clones of its volumes on an
    isolated network (volmerge upgrade --rehearse), in order; the clones are
    thrown away.  Each service alone: the clones of two services do not see
    each other.  NotDone at the first service whose rehearsal fails."""
    from volmerge.upgrade import rehearse as one

    say = say or stack.say
    out = []
    for ch in todo:
        say(f"Service {ch.service}  Rehearsing {ch.from_ref} -> {ch.to_ref}")
        try:
            rep = one(stack.ctx, _options(ch, health_timeout))
        except NotDone as exc:
            raise NotDone(f"stack rehearsal failed at service {ch.service}: {exc}") from None
        say(f"Service {ch.service}  Rehearsal passed")
        out.append({"service": ch.service, **rep})
    return out


def upgrade(stack: Stack, todo: list[Change], *, health_timeout: float = 60.0,
            progress: Callable[[str, str, float | None], None] | None = None,
            say: Say | None = None) -> list[dict[str, Any]]:
    """Upgrade each service in order; on a failure roll back the ones done
    (newest first) and raise NotDone naming the service that failed.  The
    stack generation is ``in-progress`` on disk throughout (history.py), so a
    crash is put right by :func:`recover`."""
    from volmerge.upgrade import rollback
    from volmerge.upgrade import upgrade as one
    from volmerge.volumes import faults

    from . import history

    say = say or stack.say
    store = stack.ctx.store
    with _locked(stack):
        recover(stack, say=say, locked=True)
        before = {ch.service: history.current_gen(store, ch.container) for ch in todo}
        steps = [history.ServiceStep(ch.service, ch.container, ch.from_ref, ch.to_ref,
                                     before[ch.service], None) for ch in todo]
        gen = history.begin(store, stack.project.name, steps)
        faults.point("compose.begun")
        done: list[tuple[Change, dict[str, Any]]] = []
        for ch in todo:
            say(f"Service {ch.service}  Upgrading {ch.from_ref} -> {ch.to_ref}")
            try:
                rep = one(stack.ctx, _options(ch, health_timeout),
                          progress or (lambda *_a: None))
            except BaseException as exc:
                undone = _roll_back(stack, [(c, before[c.service]) for c, _r in done], say,
                                    rollback, discard_new_data=True)
                if not undone:
                    history.mark(store, stack.project.name, gen, "failed")
                names = ", ".join(c.service for c, _r in done) or "none"
                msg = (f"stack upgrade stopped at service {ch.service}: {exc}; "
                       f"rolled back the services upgraded before it ({names})")
                if undone:
                    msg += (f"; NOT rolled back: {', '.join(undone)} "
                            "(`volmerge compose recover` retries)")
                raise NotDone(msg) from None
            say(f"Service {ch.service}  Upgraded (generation {rep['generation']})")
            done.append((ch, rep))
            faults.point("compose.service-committed")
        history.finish(store, stack.project.name, gen, [
            history.ServiceStep(ch.service, ch.container, ch.from_ref, ch.to_ref,
                                before[ch.service], int(rep["generation"])) for ch, rep in done])
    say(f"Stack {stack.project.name}  generation {gen}")
    return [{"service": ch.service, "stack_generation": gen, **rep} for ch, rep in done]


def recover(stack: Stack, *, say: Say | None = None, locked: bool = False) -> list[int]:
    """Put right every stack upgrade a crash left ``in-progress``: each of its
    services' own transaction finished or undone (volmerge recover), then
    every service whose generation moved rolled back to the one it had, data
    included; the stack generations so undone."""
    from volmerge.upgrade import recover as recover_one
    from volmerge.upgrade import rollback

    from . import history

    if not locked:
        with _locked(stack):
            return recover(stack, say=say, locked=True)
    say = say or stack.say
    store = stack.ctx.store
    out = []
    for g in history.generations(store, stack.project.name):
        if g.state != "in-progress":
            continue
        say(f"Stack {stack.project.name}  generation {g.gen} was cut short: rolling it back")
        moved = []
        for s in g.services:
            recover_one(stack.ctx, container=s.container)
            if history.current_gen(store, s.container) != s.from_gen:
                moved.append((Change(s.service, s.container, s.from_image, s.to_image,
                                     _grace(stack, s.service)), s.from_gen))
        failed = _roll_back(stack, moved, say, rollback, discard_new_data=True)
        if failed:
            raise NotDone(f"stack generation {g.gen}: {', '.join(failed)} could not be rolled "
                          "back (see above)")
        history.mark(store, stack.project.name, g.gen, "failed")
        out.append(g.gen)
    return out


def _locked(stack: Stack) -> Any:
    """One stack upgrade, rollback or recovery of a project at a time."""
    import contextlib

    from volmerge.errors import Conflict

    @contextlib.contextmanager
    def held() -> Any:
        try:
            with stack.ctx.store.lock(f"compose-{stack.project.name}", blocking=False):
                yield
        except BlockingIOError:
            raise Conflict(f"project {stack.project.name}: another compose upgrade, rollback "
                           "or recover is running") from None

    return held()


def rollback_stack(stack: Stack, *, discard_new_data: bool = False,
                   say: Say | None = None) -> dict[str, Any]:
    """The last stack upgrade not yet rolled back, undone: its services back
    to the generations they had, newest first.  Data written since is
    refused (each service's rollback counts it) unless ``discard_new_data``."""
    from volmerge.upgrade import rollback


    say = say or stack.say
    with _locked(stack):
        recover(stack, say=say, locked=True)
        return _rollback_locked(stack, discard_new_data, say, rollback)


def _rollback_locked(stack: Stack, discard_new_data: bool, say: Say,
                     rollback: Any) -> dict[str, Any]:
    from volmerge.errors import NotFound

    from . import history

    gens = [g for g in history.generations(stack.ctx.store, stack.project.name)
            if g.state == "current"]
    if not gens:
        raise NotFound(f"project {stack.project.name} has no stack upgrade to roll back")
    last = gens[-1]
    steps = [(Change(s.service, s.container, s.from_image, s.to_image,
                     _grace(stack, s.service)), s.from_gen) for s in last.services]
    if not discard_new_data:  # all or nothing: every service checked before any moves
        lose = []
        for ch, gen in steps:
            plan = rollback(stack.ctx, ch.container, to=gen, dry_run=True)
            if any(d.get("paths") for d in (plan.get("new_data") or {}).values()):
                lose.append(ch.service)
        if lose:
            raise NotDone(f"rolling the stack back would lose data written since its upgrade "
                          f"by {', '.join(lose)}: pass --discard-new-data (nothing changed)")
    failed = _roll_back(stack, steps, say, rollback, discard_new_data=discard_new_data)
    if failed:
        raise NotDone(f"stack rollback of generation {last.gen} incomplete: "
                      f"{', '.join(failed)} not rolled back (see above); the others are")
    history.mark(stack.ctx.store, stack.project.name, last.gen, "rolled-back")
    return last.to_json()


def _grace(stack: Stack, service: str) -> float:
    svc = stack.project.services.get(service)
    return convert.stop_timeout(svc, service) if svc else 10.0


def _roll_back(stack: Stack, done: list[tuple[Change, int | None]], say: Say,
               rollback: Any, *, discard_new_data: bool) -> list[str]:
    """Every upgraded service back to the generation it had (None: its
    previous one), newest first; the names of those that could not be."""
    failed = []
    for ch, gen in reversed(done):
        try:
            rollback(stack.ctx, ch.container, to=gen, discard_new_data=discard_new_data,
                     stop_timeout=ch.stop_timeout)
            say(f"Service {ch.service}  Rolled back to {ch.from_ref}")
        except Exception as exc:  # noqa: BLE001 - the others are still rolled back
            say(f"Service {ch.service}  rollback failed: {exc}")
            failed.append(ch.service)
    return failed
