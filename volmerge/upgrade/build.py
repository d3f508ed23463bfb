"""The upgrade's steps from its plan: aimed at the live container, or, for a
rehearsal, at clones of its volumes and a copy of it on no network.

One builder for both, so the rehearsal runs what the upgrade will run (the
same merge, the same successor options and health check), through the same
runner (runner.py).  The upgrade's list has two phases: what does not need
the old version stopped (a serving snapshot, the merge against it into a
staged layer, the successor's record and its start prepared: staging.py)
and the switch (stop, snapshot, merge again only what was written since,
start).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..parked import parked_name
from . import journal as jr
from . import servingcopy as cp
from . import staging as stg
from . import steps as st
from .plan import UpgradePlan, volume_mounts
from .sockets import hand_over

if TYPE_CHECKING:
    from volmerge.runtime.containers import Container
    from volmerge.runtime.options import RunOptions

    from .ctx import Ctx


@dataclass(frozen=True)
class Rehearsal:
    """Where a rehearsal aims the upgrade: names tagged so they cannot be
    mistaken for (or collide with) the live ones."""

    tag: str

    def volume(self, name: str) -> str:
        return f"{name}-rehearsal-{self.tag}"

    def container(self, name: str) -> str:
        return f"{name}-rehearsal-{self.tag}"

    @classmethod
    def new(cls, ctx: Ctx, plan: UpgradePlan) -> Rehearsal:
        """A tag under which none of the clones' names is taken."""
        while True:
            r = cls(secrets.token_hex(3))
            if not any(ctx.volumes.exists(r.volume(v.name)) for v in plan.volumes):
                return r


def current_gen(ctx: Ctx, name: str, cid: str | None = None, *, write: bool = False) -> int:
    """The generation number of the running container ``cid``.  History
    recorded under this name for another container (one that was removed and
    replaced by hand) is not this container's: it is marked ``orphaned``."""
    gens = jr.generations(ctx.store, name)
    cur = [g for g in gens if g.state == "current"]
    if cur and (cid is None or cur[-1].container_id == cid):
        return cur[-1].gen
    stale = [g for g in gens if g.state != "orphaned"]
    if stale and write:
        with ctx.store.transaction() as db:
            db.execute("UPDATE generations SET state = 'orphaned' WHERE container = ?", (name,))
    return max((g.gen for g in gens), default=0) + 1


def successor_options(c: Container, plan: UpgradePlan) -> RunOptions:
    """The old container's run options on the new image: every volume by
    name (so the successor mounts the same data even where the old one's
    volumes were made implicitly for image VOLUMEs), the health check the
    plan chose."""
    others = [m for m in c.options.mounts if m.kind != "volume"]
    opts = c.options.replace(image=plan.new_image, name=c.name, mounts=others + volume_mounts(c))
    if plan.health is not None:
        from volmerge.runtime.options import HealthConfig

        opts = opts.replace(health=HealthConfig(**plan.health))
    return opts


def _health(plan: UpgradePlan) -> st.HealthCheck:
    has_check = plan.health is not None or plan.health_source.startswith("HEALTHCHECK")
    return st.HealthCheck(check=has_check, source=plan.health_source,
                          timeout=plan.options.health_timeout)


def build_steps(ctx: Ctx, plan: UpgradePlan, jid: str, gen: int,
                rehearsal: Rehearsal | None = None) -> list[st.Step]:
    c = ctx.engine.get(plan.container_id)
    if rehearsal is not None:
        return _rehearsal_steps(ctx, c, plan, rehearsal)
    opts = plan.options
    pre, post, prep = f"upgrade-{jid}-pre", f"upgrade-{jid}-post", stg.prep_tag(jid)
    merged = [v for v in plan.volumes if v.theirs]
    new_opts = successor_options(c, plan)
    # While the old version serves (nothing here depends on the final data):
    # a snapshot with --pause semantics, the merge against it into a staged
    # layer, the successor recorded under the name, its start prepared (its
    # root mounted; staging.py).
    steps: list[st.Step] = [
        stg.ServingSnapshot(volume=v.name, tag=prep, container=c.id, timeout=opts.stop_timeout)
        for v in merged]
    # a volume too busy to snapshot (a file held open) is copied instead
    # while the container is paused (servingcopy.py)
    steps += [cp.ServingCopy(volume=v.name, tag=prep, copy=cp.copy_name(jid, v.name),
                             container=c.id) for v in merged]
    steps += [stg.StageMerge(volume=v.name, target=v.target, at=prep, image=plan.new_image,
                             on_conflict=opts.on_conflict, jid=jid,
                             copy=cp.copy_name(jid, v.name)) for v in merged]
    steps.append(st.RenameContainer(id=c.id, old_name=c.name, new_name=parked_name(c.name, gen),
                                    gen=gen))
    steps.append(st.CreateContainer(name=c.name, image=plan.new_image, old_id=c.id,
                                    options=new_opts.to_json()))
    leases = ([] if new_opts.network in ("none", "host")
              else ctx.network.leases(container_id=c.id))
    steps.append(stg.PrepareStart(name=c.name, old_id=c.id,
                                  ip=leases[0].ip if len(leases) == 1 else None))
    # The switch: stop, snapshot, merge again only what was written since the
    # serving snapshot, hand over the address, start.
    steps.append(st.StopContainer(id=c.id, name=c.name, timeout=opts.stop_timeout,
                                  running=c.state in ("running", "paused")))
    steps += [st.SnapshotVolume(volume=v.name, tag=pre, restore=True) for v in plan.volumes]
    steps += [stg.FinishMerge(volume=v.name, target=v.target, since=prep, at=pre,
                              image=plan.new_image, on_conflict=opts.on_conflict, jid=jid,
                              copy=cp.copy_name(jid, v.name))
              for v in merged]
    steps += [st.SnapshotVolume(volume=v.name, tag=post, restore=False) for v in plan.volumes]
    if leases:
        steps.append(st.TakeOverNetwork(old_id=c.id, old_name=c.name, name=c.name))
    steps += hand_over(new_opts, c.id, c.name)  # --socket-activate (sockets.py)
    steps.append(st.StartContainer(name=c.name, old_id=c.id, timeout=opts.stop_timeout))
    steps.append(_health(plan))
    return steps


def _rehearsal_steps(ctx: Ctx, c: Container, plan: UpgradePlan, r: Rehearsal) -> list[st.Step]:
    """The live container keeps serving: its volumes are cloned (not
    snapshotted), the merge writes into the clones, and the copy of the
    successor runs on no network, publishes no ports and never restarts."""
    opts = plan.options
    steps: list[st.Step] = [st.CloneVolume(volume=v.name, clone=r.volume(v.name))
                            for v in plan.volumes]
    steps += [st.MergeVolume(volume=r.volume(v.name), target=v.target, at=None,
                             image=plan.new_image, on_conflict=opts.on_conflict,
                             report_as=v.name) for v in plan.volumes if v.theirs]
    live = successor_options(c, plan)
    mounts: list[Any] = [m.replace(source=r.volume(m.source)) if m.kind == "volume"
                         else m for m in live.mounts]
    name = r.container(c.name)
    new_opts = live.replace(
        name=name, mounts=mounts, ports=[], socket_activate=[], network="none", ip=None,
        restart=c.options.restart.replace(name="no"), rm=False,
    )
    steps.append(st.CreateContainer(name=name, image=plan.new_image, old_id=c.id,
                                    options=new_opts.to_json()))
    steps.append(stg.PrepareStart(name=name, old_id=c.id))
    steps.append(st.StartContainer(name=name, old_id=c.id, timeout=opts.stop_timeout))
    steps.append(_health(plan))
    return steps
