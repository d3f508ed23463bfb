"""``volmerge auto-update``: podman's auto-update, with the data carried and
rolled back too.

A container takes part when the label ``io.containers.autoupdate`` — on the
container (``run --label``) or, as with podman, on its image — says
``registry`` (``image`` is podman's older name for it) or ``local``:

- ``local``: the image reference the container was made from now names
  another image in the store (a ``volmerge image load`` or ``image tag``
  moved it);
- ``registry``: the same after pulling the reference from its registry.

Each update is a whole ``volmerge upgrade`` to that reference: snapshot,
merge, SQL replay, health check, and on failure the automatic rollback of
image **and data**. The report follows ``podman auto-update``'s columns:
UPDATED is ``true``, ``false`` (nothing new), ``pending`` (a dry run),
``rolled back`` or ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

LABEL = "io.containers.autoupdate"
POLICIES = {"registry": "registry", "image": "registry", "local": "local"}


@dataclass
class Update:
    container: str
    image: str                      # the reference it follows
    policy: str
    current: str                    # image id it runs
    new: str | None = None          # image id the reference names now
    updated: str = "false"          # true | false | pending | rolled back | failed
    detail: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def policy_of(labels: dict[str, str], image_labels: dict[str, str]) -> str | None:
    """The container's auto-update policy (its own label first, then its
    image's); None when it takes no part.  An unknown value is reported."""
    raw = labels.get(LABEL, image_labels.get(LABEL))
    if raw is None or raw in ("", "disabled", "false"):
        return None
    return POLICIES.get(raw, f"unknown:{raw}")


def check(ctx: Any, pull: Callable[[str], None] | None = None) -> list[Update]:
    """Every labelled container and whether its reference names a new image
    (``pull``: how the registry policy brings the reference up to date)."""
    from volmerge.runtime.errors import RuntimeFault

    out = []
    for c in sorted(ctx.engine.list(all=True), key=lambda c: c.name):
        image_labels = (c.image_config.get("config") or {}).get("Labels") or {}
        policy = policy_of(c.options.labels, image_labels)
        if policy is None or _kept_generation(ctx, c):
            continue
        u = Update(container=c.name, image=c.image_ref, policy=policy, current=c.image_id)
        out.append(u)
        if policy.startswith("unknown:"):
            u.updated, u.detail = "failed", f"unknown {LABEL} policy {policy[8:]!r}"
            continue
        try:
            if policy == "registry" and pull is not None:
                pull(c.image_ref)
            u.new = ctx.images.get(c.image_ref).id
        except RuntimeFault as exc:
            u.updated, u.detail = "failed", str(exc)
            continue
        if u.new != u.current:
            u.updated = "pending"
    return out


def _kept_generation(ctx: Any, c: Any) -> bool:
    """Whether ``c`` is an earlier generation an upgrade kept (stopped, as
    ``NAME.genN``) for rollback: it follows nothing."""
    base, sep, n = c.name.rpartition(".gen")
    if not (sep and base and n.isdigit()):
        return False
    from volmerge.upgrade import generations

    return any(g.container_id == c.id for g in generations(ctx.store, base))


def run(ctx: Any, *, dry_run: bool = False, pull: Callable[[str], None] | None = None,
        progress: Callable[[str, str, float | None], None] | None = None) -> list[Update]:
    """Check every labelled container and upgrade those with a new image
    (``dry_run``: preview each instead: what the upgrade would do);
    ``progress(event, text, seconds)``, None for none."""
    from volmerge.errors import exit_code_of, known_error_types
    from volmerge.upgrade import UpgradeOptions, preview, upgrade
    from volmerge.upgrade.runner import no_progress

    updates = check(ctx, pull)
    for u in updates:
        if u.updated != "pending":
            continue
        opts = UpgradeOptions(container=u.container, to_image=u.image)
        try:
            if dry_run:
                rep = preview(ctx, opts)
                u.summary = dict(rep.get("summary") or {})
                if rep.get("would_stop"):
                    u.detail = "the upgrade would stop on conflicts"
                continue
            rep = upgrade(ctx, opts, progress or no_progress)
            u.updated, u.summary = "true", _summary(rep)
        except known_error_types() as exc:
            # exit 1 is "not done, rolled back": the container and its data as before
            u.updated = "rolled back" if exit_code_of(exc) == 1 and not dry_run else "failed"
            u.detail = str(exc)
    return updates


def _summary(rep: dict[str, Any]) -> dict[str, Any]:
    files = [f for r in (rep.get("volumes") or {}).values() for f in r.get("files", [])]
    counts: dict[str, Any] = {"generation": rep.get("generation")}
    for f in files:
        counts[f["action"]] = counts.get(f["action"], 0) + 1
    return counts
