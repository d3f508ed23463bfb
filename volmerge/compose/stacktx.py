"""A compose stack's upgrade, rollback and rehearsal as one journaled run.

Each service's run is prepared as its own kind prepares it (the upgrade's
plan and steps, the rollback's, the rehearsal's), under every service's
container lock, and the runner walks the chain as one transaction
(volmerge/upgrade/group.py): one journal, named ``stack:PROJECT``, whose
plan lists the containers, so plain ``volmerge recover`` finishes or undoes
it without the project's files (each step carries what it needs, the stop
grace periods included).

The rehearsal's copies run together on a private network of their own,
each reachable there by its service's name and aliases, with no published
ports; everything is thrown away once the last service passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from volmerge.upgrade.group import Member
    from volmerge.upgrade.runner import Finished, Prepared

    from .stack import Stack
    from .stackupgrade import Change

Say = Callable[[str], None]


def journal_name(project: str) -> str:
    """The journal's ``container``: the stack's own transaction lock, a name
    no container can have."""
    return f"stack:{project}"


@contextlib.contextmanager
def project_lock(store: Any, project: str) -> Iterator[None]:
    """One stack upgrade, rollback, recovery or prune of a project at a
    time (lock ``compose-PROJECT``, not waited for): Conflict while another
    holds it."""
    from volmerge.errors import Conflict

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(store.lock(f"compose-{project}", blocking=False))
        except BlockingIOError:
            raise Conflict(f"project {project}: another compose upgrade, rollback or recover "
                           "is running") from None
        yield


def _announce(members: list[Member], verb: str, passed: str | None, say: Say,
              event: str, text: str) -> None:
    """The runner's progress as one line per service as its part starts (and
    one for the service before it, whose steps then all passed)."""
    from volmerge.upgrade.group import Part

    for i, m in enumerate(members):
        if event == "step" and text == Part(i, m.container, m.kind).describe():
            if passed and i:
                say(f"Service {members[i - 1].label}  {passed}")
            p = m.prepared
            say(f"Service {m.label}  {verb} {p.from_image} -> {p.to_image}")


def run(stack: Stack, members: Callable[[], list[Member]], containers: list[str], *,
        kind: str, verb: str, say: Say, jid: str, passed: str | None = None,
        before: Callable[[Prepared], None] = lambda p: None,
        head: Callable[[], tuple[Any, ...]] = tuple) -> Finished:
    """Prepare every member under the locks, write what the caller records
    before the journal begins (``before``), run the chain."""
    from volmerge.upgrade import group, runner

    built: list[Member] = []

    def prepare() -> Prepared:
        built[:] = members()
        p = group.combine(stack.project.name, built, head=head())
        p = dataclasses.replace(p, jid=jid)
        before(p)
        return p

    def progress(event: str, text: str, seconds: float | None) -> None:
        if built:
            _announce(built, verb, passed, say, event, text)

    return runner.run_journaled(stack.ctx, kind, journal_name(stack.project.name), prepare,
                                progress=progress, members=tuple(containers))


def upgrade_members(stack: Stack, todo: list[Change], health_timeout: float) -> list[Member]:
    from volmerge.upgrade import transaction
    from volmerge.upgrade.group import Member

    return [Member(ch.service, ch.container, "upgrade",
                   transaction.prepare(stack.ctx, options(ch, health_timeout)))
            for ch in todo]


def rollback_members(stack: Stack, steps: list[tuple[Change, int | None]],
                     discard_new_data: bool, keep_new_data_as: str | None = None
                     ) -> list[Member]:
    """Newest first: the last service upgraded is the first rolled back.
    Every member is prepared (its names for kept data checked) before any
    step runs."""
    from volmerge.upgrade.group import Member
    from volmerge.upgrade.rollback import prepare as prepare_rollback

    return [Member(ch.service, ch.container, "rollback",
                   prepare_rollback(stack.ctx, ch.container, to=gen,
                                    discard_new_data=discard_new_data,
                                    keep_new_data_as=(None if keep_new_data_as is None
                                                      else f"{keep_new_data_as}-{ch.service}"),
                                    stop_timeout=ch.stop_timeout))
            for ch, gen in reversed(steps)]


def options(ch: Change, health_timeout: float) -> Any:
    from volmerge.upgrade import UpgradeOptions

    return UpgradeOptions(container=ch.container, to_image=ch.to_ref,
                          stop_timeout=ch.stop_timeout, health_timeout=health_timeout)


def network_name(project: str) -> str:
    return f"{project}_rehearsal-{secrets.token_hex(3)}"[-64:]


def rehearsal_members(stack: Stack, todo: list[Change], health_timeout: float,
                      network: str) -> list[Member]:
    """Each service's rehearsal, its copy moved from no network onto the
    private one under the names the live container has on its own (the
    service, its aliases, the container's name and hostname)."""
    from volmerge.upgrade import rehearsal
    from volmerge.upgrade.group import Member
    from volmerge.upgrade.steps import CreateContainer

    out = []
    for ch in todo:
        p = rehearsal.prepare(stack.ctx, options(ch, health_timeout))
        live = stack.ctx.engine.get(ch.container)
        names = [a for a in dict.fromkeys([ch.service, *live.options.aliases, live.name]) if a]

        def aim(step: Any, names: list[str] = names) -> Any:
            if not isinstance(step, CreateContainer):
                return step
            opts = {**step.options, "network": network, "ip": None, "ports": [],
                    "aliases": names}
            return dataclasses.replace(step, options=opts)

        out.append(Member(ch.service, ch.container, "rehearsal",
                          dataclasses.replace(p, steps=tuple(aim(s) for s in p.steps))))
    return out


def part_reports(done: Finished) -> list[dict[str, Any]]:
    """Per member: its plan and what its run measured (timings, reports)."""
    from volmerge.upgrade.group import GroupTx

    tx = done.tx
    plan = done.prepared.plan
    subs = tx.parts if isinstance(tx, GroupTx) else []
    return [{"part": part, "tx": sub} for part, sub in zip(plan["parts"], subs, strict=False)]


def failed_member(exc: Any) -> int | None:
    """The index of the member whose step failed (None: a step of the stack's own)."""
    from volmerge.upgrade.group import GroupTx

    tx = exc.prepared.tx
    return tx.current if isinstance(tx, GroupTx) else None
