"""`volmerge volume ...`: volumes as layer stacks (snapshot, rollback, clone).

Thin commands over volmerge.volumes.VolumeManager.  Only typer is imported at
start-up, so that `volume snapshot` and `volume rollback` stay fast.
"""

from __future__ import annotations

import typer

from .common import emit_json, store, table

volume_app = typer.Typer(
    help="Volumes as layers: create, snapshot, roll back, clone, diff, export, compact.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(volume_app, name="volume")


def _vm(ctx: typer.Context, *, hooks: bool = False):
    """The volume manager wired as everywhere else (volmerge.context).
    Without ``hooks`` it cannot reach containers, so every user of a volume
    counts as a running writer (the safe reading); ``snapshot --pause/--force``
    asks for them."""
    vm = _context(ctx).volumes
    if not hooks:
        vm.hooks = None
    vm.pool.reap_now = False  # dropped layers are deleted after the command answers
    ctx.call_on_close(vm.pool.reap_in_background)
    return vm


def _context(ctx: typer.Context):
    """The command's one ``volmerge.context.Context`` (its volume manager and engine)."""
    from volmerge.context import Context

    root = ctx.find_root()
    if not isinstance(root.meta.get("volmerge.context"), Context):
        root.meta["volmerge.context"] = Context(store(ctx))
    return root.meta["volmerge.context"]


def _ago(ts: float | None) -> str:
    import time

    if ts is None:
        return ""
    s = max(0, time.time() - ts)
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{int(s // n)} {unit} ago"
    return "just now"


@volume_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE label (repeatable)."),
) -> None:
    """Create an empty volume (an empty seed layer and an empty live layer)."""
    from volmerge.errors import BadInput

    labels = {}
    for item in label:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise BadInput(f"invalid label {item!r}: expected KEY=VALUE")
        labels[k] = v
    print(_vm(ctx).create(name, labels=labels).name)


@volume_app.command("ls")
def ls(
    ctx: typer.Context,
    json: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print names only."),
) -> None:
    """List volumes."""
    vols = _vm(ctx).list()
    if json:
        emit_json([_summary(v) for v in vols])
    elif quiet:
        for v in vols:
            print(v.name)
    else:
        table(["NAME", "SNAPSHOTS", "LAYERS", "USERS", "CREATED"],
              [[v.name, len(v.snapshots), len(v.layers), len(v.users), _ago(v.created)] for v in vols])


def _summary(v) -> dict:
    return {"name": v.name, "created": v.created, "labels": v.labels, "users": v.users,
            "snapshots": len(v.snapshots), "layers": len(v.layers), "mountpoint": v.mountpoint}


@volume_app.command("inspect")
def inspect(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a volume's layers (with sizes), snapshots and the containers using it."""
    from dataclasses import asdict

    from .common import human_size

    v = _vm(ctx).get(name)
    if json:
        d = asdict(v)
        d["size"] = v.size
        emit_json(d)
        return
    print(f"Name:       {v.name}")
    print(f"Mountpoint: {v.mountpoint}{'' if v.mounted else ' (not mounted)'}")
    print(f"Size:       {human_size(v.size)}")
    if v.labels:
        print("Labels:     " + ", ".join(f"{k}={val}" for k, val in v.labels.items()))
    print("Users:      " + (", ".join(f"{_container_name(ctx, c)} ({m})"
                                       for c, m in v.users.items()) or "none"))
    print()
    table(["LAYER", "ROLE", "SNAPSHOT", "TAG", "SIZE", "SHARED"],
          [[layer.id, layer.role, layer.snapshot or "", layer.tag or "", human_size(layer.size),
            "yes" if layer.shared else ""] for layer in v.layers])


@volume_app.command("rm")
def rm(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Volume names."),
    force: bool = typer.Option(False, "--force", "-f",
                               help="Ignore missing volumes; remove even volumes that stopped containers use (never one a running container has mounted)."),
) -> None:
    """Remove volumes (refused while a container, even a stopped one, uses one, unless
    --force; always while a running container has one mounted)."""
    from volmerge.errors import Conflict, NotFound

    vm = _vm(ctx)
    for n in names:  # even -f: a running container's data is not pulled from under it
        mounted = _mounted_by_live_container(ctx, vm, n)
        if mounted:
            raise Conflict(f"volume {n!r} is mounted by running container {mounted}: stop "
                           "it first (volmerge stop)")
    if not force:
        named = _named_by_containers(ctx)
        for n in names:
            if n in named:
                raise Conflict(f"volume {n!r} is in use by container {named[n]}: remove the "
                               "container first (volmerge rm), or use --force")
    for n in names:
        try:
            vm.remove(n, force=force)
        except NotFound:
            if not force:
                raise
            continue
        print(n)


@volume_app.command("prune")
def prune(ctx: typer.Context) -> None:
    """Remove every volume that no container (in any state) uses, and unused layers."""
    vm = _vm(ctx)
    for n in vm.prune(keep=set(_named_by_containers(ctx))):
        print(n)


def _container_name(ctx: typer.Context, cid: str) -> str:
    """A user's container name (its short id when it is no container)."""
    from volmerge.errors import NotFound
    from volmerge.runtime.errors import NotFound as RuntimeNotFound

    try:
        return str(_context(ctx).engine.get(cid).name)
    except (NotFound, RuntimeNotFound):
        return cid[:12]


def _mounted_by_live_container(ctx: typer.Context, vm, name: str) -> str | None:
    """The name of a running (or paused) container that has volume ``name``
    mounted, or None (also when there is no such volume).  The volume's
    recorded users that are no container, or a stopped one, do not count:
    those are what ``--force`` is for."""
    from volmerge.errors import NotFound
    from volmerge.runtime.errors import NotFound as RuntimeNotFound

    try:
        users = vm.users(name)
    except NotFound:
        return None
    for cid in users:
        try:
            c = _context(ctx).engine.get(cid)
        except (NotFound, RuntimeNotFound):
            continue
        if c.live:
            return str(c.name)
    return None


def _named_by_containers(ctx: typer.Context) -> dict[str, str]:
    """Volume name -> the first container (``NAME (STATE)``) whose options
    name it, whatever the container's state: a stopped container's volume
    is its data, as docker's and podman's ``volume rm`` / ``prune`` see it
    (the manager's own users are only the containers that have it mounted).
    An upgrade's parked generations (``NAME.genN``) do not count: they are
    the upgrade history's, which ``prune`` and ``rollback`` manage."""
    from volmerge.parked import is_parked

    named: dict[str, str] = {}
    for c in _context(ctx).engine.list(all=True):
        if is_parked(c.name):
            continue
        for m in c.options.mounts:
            if m.kind == "volume" and m.source:
                named.setdefault(m.source, f"{c.name} ({c.state})")
    return named


@volume_app.command("snapshot")
def snapshot(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Name the snapshot (kept by compaction)."),
    pause: bool = typer.Option(False, "--pause", help="Freeze containers using the volume during the snapshot."),
    force: bool = typer.Option(False, "--force", help="Snapshot even while a container writes to the volume."),
) -> None:
    """Freeze the live layer as a snapshot and start an empty one (O(1), no copy)."""
    snap = _vm(ctx, hooks=pause or force).snapshot(
        name, tag, pause=pause, force=force)
    print(snap.tag or snap.id)


@volume_app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    to: str | None = typer.Option(None, "--to", help="Snapshot tag or id (default: the latest, refused if none; 'seed': the seed, discarding all data)."),
    keep_as: str | None = typer.Option(None, "--keep-as", metavar="NAME2",
                                          help="Keep the discarded state as a new volume NAME2."),
) -> None:
    """Return a volume to a snapshot by dropping the layers above it (O(1))."""
    snap = _vm(ctx).rollback(name, to, keep_as=keep_as)
    print(f"{name}: at {'seed' if snap is None else (snap.tag or snap.id)}")


@volume_app.command("clone")
def clone(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Source volume."),
    new: str = typer.Argument(..., help="Name of the new volume."),
    from_: str | None = typer.Option(None, "--from", help="Clone the state at this snapshot."),
) -> None:
    """Make a new volume sharing the source's frozen layers (O(1)); writes stay apart."""
    print(_vm(ctx).clone(name, new, from_=from_).name)


@volume_app.command("diff")
def diff(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    from_: str | None = typer.Option(None, "--from", help="Start point: snapshot, 'seed' (default: latest snapshot)."),
    to: str | None = typer.Option(None, "--to", help="End point: snapshot, 'live' (default: current state)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show paths added, modified and deleted between two points of a volume."""
    changes = _vm(ctx).diff(name, from_, to)
    if json:
        emit_json([{"path": c.path, "kind": c.kind, "type": c.type} for c in changes])
        return
    mark = {"added": "A", "modified": "M", "deleted": "D"}
    for c in changes:
        print(f"{mark[c.kind]} {c.path}{'/' if c.type == 'dir' else ''}")


@volume_app.command("export")
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
    output: str = typer.Option(..., "--output", "-o", help="Tar file to write ('-': stdout)."),
    at: str | None = typer.Option(None, "--at", help="Export the state at this snapshot."),
) -> None:
    """Write a tar of the volume's merged content (streamed)."""
    import sys

    from volmerge.errors import BadInput

    if output == "-" and sys.stdout.isatty():
        raise BadInput("refusing to write a tar to a terminal; use -o FILE or a pipe")
    _vm(ctx).export(name, output, at)


@volume_app.command("import")
def import_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name of the new volume."),
    file: str = typer.Argument(..., help="Tar file ('-': stdin)."),
) -> None:
    """Create a volume holding the content of a tar file."""
    print(_vm(ctx).import_(name, file).name)


@volume_app.command("compact")
def compact(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Volume name."),
) -> None:
    """Squash untagged snapshots into fewer layers (tagged snapshots stay)."""
    before, after = _vm(ctx).compact(name)
    print(f"{name}: {before} -> {after} frozen layers")
