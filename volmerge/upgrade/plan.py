"""Planning an upgrade: what changes, with which strategy, checked how.

The plan is computed the same way for ``--dry-run``, ``--rehearse`` and the
real upgrade; only what is done with it differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from volmerge.runtime.value import plain

from ..errors import BadInput

if TYPE_CHECKING:
    from volmerge.runtime.containers import Container
    from volmerge.runtime.options import HealthConfig, Mount
    from volmerge.strategies.policy import Policy

    from .ctx import Ctx
    from .space import SpaceEstimate

POLICY_LABEL = "io.volmerge.policy"
POLICY_FILE = "/etc/volmerge/policy.toml"
ON_CONFLICT = ("fail", "ours", "theirs", "markers", "keep-both")


@dataclass
class UpgradeOptions:
    container: str
    to_image: str
    policy_file: str | None = None
    allow_data_loss: bool = False           # the operator's --allow-data-loss
    on_conflict: str = "fail"
    health_cmd: str | None = None
    health_http: str | None = None
    health_tcp: int | None = None
    health_timeout: float = 60.0
    stop_timeout: float = 10.0


@dataclass
class VolumePlan:
    name: str
    target: str
    readonly: bool = False
    theirs: bool = True            # the new image has content at the target
    declared: bool = True          # the new image declares the target a volume
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UpgradePlan:
    container: str
    container_id: str
    old_image: str
    old_image_id: str
    new_image: str
    new_image_id: str
    volumes: list[VolumePlan]
    health: dict[str, Any] | None          # HealthConfig as JSON; None: the image's own
    health_source: str
    policy_sources: list[str]
    options: UpgradeOptions
    notes: list[str] = field(default_factory=list)
    policy: Policy | None = None            # not serialised
    policy_warnings: list[str] = field(default_factory=list)  # image requests ignored
    space: SpaceEstimate | None = None      # what the merge writes vs free (space.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container, "container_id": self.container_id,
            "from": {"image": self.old_image, "id": self.old_image_id},
            "to": {"image": self.new_image, "id": self.new_image_id},
            "volumes": [v.to_json() for v in self.volumes],
            "health": {"source": self.health_source, "check": self.health},
            "policy": self.policy_sources, "policy_warnings": self.policy_warnings,
            "allow_data_loss": self.options.allow_data_loss,
            "on_conflict": self.options.on_conflict,
            "health_timeout": self.options.health_timeout, "notes": self.notes,
            "space": self.space.to_json() if self.space is not None else None,
        }


def health_override(opts: UpgradeOptions) -> HealthConfig | None:
    from volmerge.runtime.options import HealthConfig

    if opts.health_cmd:
        return HealthConfig(test=["CMD-SHELL", opts.health_cmd], interval=0.5, timeout=5,
                            retries=3)
    if opts.health_http:
        return HealthConfig(http_url=opts.health_http, interval=0.5, timeout=5, retries=3)
    if opts.health_tcp:
        return HealthConfig(tcp_port=opts.health_tcp, interval=0.5, timeout=5, retries=3)
    return None


def volume_mounts(c: Container) -> list[Mount]:
    """The container's named volumes: what it was run with plus the volumes
    the engine made for image VOLUMEs nobody mounted (recorded once started)."""
    from volmerge.runtime.options import Mount

    out = [m for m in c.options.mounts if m.kind == "volume"]
    have = {m.target.rstrip("/") for m in c.options.mounts}
    for r in c.mounts or []:
        if r.get("kind") == "volume" and r.get("target", "").rstrip("/") not in have:
            out.append(Mount("volume", r["target"], r["name"], bool(r.get("readonly"))))
            have.add(r["target"].rstrip("/"))
    return out


def check_timeouts(*, health: float | None = None, stop: float | None = None) -> None:
    """An upgrade's (or rollback's) timeouts: the health check's budget above
    0, the stop's grace a number of seconds (runtime.options.check_seconds);
    NaN and infinity refused.  Checked when the upgrade is planned, and by
    the commands before they take the container's lock."""
    if health is not None and not 0 < health < float("inf"):
        raise BadInput("--health-timeout must be positive")
    if stop is not None:
        from volmerge.runtime.options import check_seconds

        check_seconds(stop, "--stop-timeout")


def make_plan(ctx: Ctx, opts: UpgradeOptions) -> UpgradePlan:
    from volmerge.strategies.policy import (
        Policy,
        allow_data_loss_policy,
        load_policy,
        parse_policy,
        restrict_image_policy,
    )

    from .imageview import image_root, inside, read_file
    from .space import estimate, volume_bytes

    if opts.on_conflict not in ON_CONFLICT:
        raise BadInput(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    check_timeouts(health=opts.health_timeout, stop=opts.stop_timeout)
    # the settings read by later steps, checked now: a bad one changes nothing
    from . import settings

    settings.check()
    operator = load_policy(opts.policy_file) if opts.policy_file else None
    c = ctx.engine.get(opts.container)
    old = ctx.images.get(c.image_id)
    new = ctx.images.get(opts.to_image)
    notes: list[str] = []
    if new.id == old.id:
        notes.append("the new image is the same as the running one: data is carried as is")
    cfg = (new.config or {}).get("config") or {}
    declared = set((cfg.get("Volumes") or {}).keys())
    sources = []
    image_policy: Policy | None = None
    vols: list[VolumePlan] = []
    written = 0
    with image_root(ctx.store, new) as root:
        text = (cfg.get("Labels") or {}).get(POLICY_LABEL)
        src, origin = f"label {POLICY_LABEL} of {opts.to_image}", f"image:label {POLICY_LABEL}"
        if not text:
            raw = read_file(root, POLICY_FILE)
            if raw is not None:
                text, src = raw.decode("utf-8", "replace"), f"{POLICY_FILE} in {opts.to_image}"
                origin = f"image:{POLICY_FILE}"
        if text:
            # the image's wish, not the operator's: never lowers the operator's safety
            image_policy = restrict_image_policy(parse_policy(text, src), origin)
            sources.append(src)
        for m in volume_mounts(c):
            vp = VolumePlan(name=m.source, target=m.target, readonly=m.readonly)
            vp.declared = m.target.rstrip("/") in {d.rstrip("/") for d in declared}
            theirs = inside(root, m.target)
            vp.theirs = theirs is not None
            if theirs is not None:
                written += volume_bytes(theirs, ctx.volumes.stack(m.source), m.target)
            if not vp.declared:
                vp.notes.append(
                    f"{opts.to_image} no longer declares {m.target} as a volume: "
                    f"volume {m.source} stays mounted there"
                )
            if not vp.theirs:
                vp.notes.append(
                    f"{opts.to_image} has nothing at {m.target}: the live data is kept as is"
                )
            vols.append(vp)
    if operator is not None:
        sources.insert(0, f"--policy {opts.policy_file}")
    loss = allow_data_loss_policy() if opts.allow_data_loss else None
    if loss is not None:
        sources.insert(0, "--allow-data-loss")
    policy = (Policy.combined(loss, operator, image_policy)
              if (loss or operator or image_policy) else None)
    override = health_override(opts)
    if override is not None:
        health, hsrc = plain(override), "upgrade options"
    elif c.options.health is not None and not c.options.health.disabled:
        health, hsrc = plain(c.options.health), "the container's run options"
    elif (cfg.get("Healthcheck") or {}).get("Test") and cfg["Healthcheck"]["Test"][0] != "NONE":
        health, hsrc = None, f"HEALTHCHECK of {opts.to_image}"
    else:
        health, hsrc = None, f"none: the new container must stay up for {opts.health_timeout:g}s"
    return UpgradePlan(
        container=c.name, container_id=c.id, old_image=c.image_ref, old_image_id=str(old.id),
        new_image=opts.to_image, new_image_id=str(new.id), volumes=vols, health=health,
        health_source=hsrc, policy_sources=sources, options=opts, notes=notes, policy=policy,
        policy_warnings=list(image_policy.warnings) if image_policy is not None else [],
        space=estimate(ctx.store.root, written),
    )
