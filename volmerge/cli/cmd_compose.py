"""`volmerge compose ...`: compose files run as docker compose runs them
(docs/compose.md).

Thin: the options name the project (volmerge.compose.loader), the commands
call volmerge.compose.stack.  The compose package is imported inside each
command only, so no other command pays for it.
"""

from __future__ import annotations

import sys

import typer

from .common import emit_json, store, table

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing for every command
if TYPE_CHECKING:
    from volmerge.compose.loader import Project
    from volmerge.compose.stack import Stack

_PASSTHRU = {"allow_interspersed_args": False}

compose_app = typer.Typer(
    help="Run a compose.yaml (the Compose Specification): up, down, ps, logs, exec, run, pull, "
         "config; upgrade, rollback, history, prune, recover.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(compose_app, name="compose")


@compose_app.callback()
def _options(
    ctx: typer.Context,
    file: list[str] | None = typer.Option(
        None, "-f", "--file", metavar="FILE",
        help="Compose file (repeatable, merged in order; default: compose.yaml, "
             "compose.yml, docker-compose.yaml, docker-compose.yml, or COMPOSE_FILE)."),
    project_name: str | None = typer.Option(
        None, "-p", "--project-name", metavar="NAME",
        help="Project name (default: COMPOSE_PROJECT_NAME, the file's name:, the directory)."),
    env_file: list[str] | None = typer.Option(
        None, "--env-file", metavar="FILE",
        help="Variables for interpolation instead of the project's .env (repeatable)."),
    profile: list[str] | None = typer.Option(
        None, "--profile", metavar="NAME", help="Enable a profile (repeatable; COMPOSE_PROFILES)."),
) -> None:
    """Run a compose.yaml: its services as volmerge containers, named as docker compose names
    them (PROJECT-SERVICE-1, PROJECT_default, PROJECT_VOLUME)."""
    ctx.meta["compose"] = (tuple(file or ()), project_name, tuple(env_file or ()),
                           tuple(profile or ()))


def _project(ctx: typer.Context, targets: list[str] | None = None) -> Project:
    from volmerge.compose.loader import Options, load

    files, name, env_files, profiles = ctx.meta["compose"]
    project = load(Options(files=files, project_name=name, env_files=env_files,
                           profiles=profiles, targets=tuple(targets or ())))
    for w in dict.fromkeys(project.warnings):
        sys.stderr.write(f"volmerge: warning: {w}\n")
    return project


def _stack(ctx: typer.Context, targets: list[str] | None = None) -> Stack:
    from volmerge.compose.stack import Stack

    return Stack(store(ctx), _project(ctx, targets))


@compose_app.command("config")
def config(
    ctx: typer.Context,
    services: bool = typer.Option(False, "--services", help="Only the service names."),
    json_: bool = typer.Option(False, "--json", help="JSON instead of YAML."),
) -> None:
    """Print the project as loaded: files merged, variables interpolated, checked."""
    project = _project(ctx)
    if services:
        from volmerge.compose.model import order

        for n in order(project.services):
            print(n)
        return
    if json_:
        emit_json(project.to_dict())
        return
    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    # ruamel.yaml sets it to None in YAML.__init__ (no annotation): mypy infers the type None
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    y.dump(project.to_dict(), sys.stdout)


@compose_app.command("up")
def up(
    ctx: typer.Context,
    services: list[str] | None = typer.Argument(None, help="Services (default: all)."),
    detach: bool = typer.Option(False, "-d", "--detach",
                                help="Leave the services running in the background."),
) -> None:
    """Create and start the services in dependency order; leave unchanged ones alone,
    recreate changed ones (their volumes kept).  Without -d, follow their logs; Ctrl-C
    stops them."""
    st = _stack(ctx, services)
    st.up(services or ())
    if detach:
        return
    try:
        st.logs(services or (), follow=True)
    except KeyboardInterrupt:
        sys.stderr.write("Gracefully stopping...\n")
        from volmerge.compose.convert import stop_timeout

        for c in reversed(st.containers()):
            svc = c.options.labels.get("com.docker.compose.service", "")
            if c.live and svc in st.project.services:
                st.engine.stop(c.id, stop_timeout(st.project.services[svc], svc))


@compose_app.command("down")
def down(
    ctx: typer.Context,
    volumes: bool = typer.Option(False, "-v", "--volumes",
                                 help="Also remove the named volumes of the file and the "
                                      "anonymous ones (never external volumes)."),
) -> None:
    """Stop and remove the project's containers and networks."""
    _stack(ctx).down(volumes=volumes)


@compose_app.command("ps")
def ps(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "-a", "--all", help="Stopped containers too."),
    json_: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids."),
) -> None:
    """The project's containers."""
    from .cmd_container import _net, _status

    st = _stack(ctx)
    cs = [c for c in st.containers() if all_ or c.live]
    rows = []
    for c in cs:
        net = _net(st.engine, c)
        rows.append({"Name": c.name, "ID": c.id, "Image": c.image_ref,
                     "Service": c.options.labels.get("com.docker.compose.service"),
                     "Project": st.project.name, "State": c.state, "Health": c.health or "",
                     "ExitCode": c.exit_code, "Status": _status(c),
                     "Networks": net["network"], "IP": net["ip"], "Publishers": net["ports"]})
    if json_:
        emit_json(rows)
    elif quiet:
        for r in rows:
            print(r["ID"][:12])
    else:
        table(["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"],
              [[r["Name"], r["Image"], r["Service"], r["Status"],
                ", ".join(r["Publishers"]) if r["State"] == "running" else ""] for r in rows])


@compose_app.command("logs")
def logs(
    ctx: typer.Context,
    services: list[str] | None = typer.Argument(None, help="Services (default: all)."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Follow until they exit."),
    tail: int | None = typer.Option(None, "-n", "--tail", help="Only the last N lines of each."),
) -> None:
    """The services' output, each line prefixed with its container's name."""
    try:
        _stack(ctx).logs(services or (), follow=follow, tail=tail)
    except KeyboardInterrupt:
        pass


@compose_app.command("exec", context_settings=_PASSTHRU)
def exec_(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="Service."),
    command: list[str] = typer.Argument(..., help="Command and arguments."),
    env: list[str] | None = typer.Option(None, "-e", "--env", help="KEY=VALUE (repeatable)."),
    user: str | None = typer.Option(None, "-u", "--user", help="USER[:GROUP]."),
    workdir: str | None = typer.Option(None, "-w", "--workdir", help="Working directory."),
    no_tty: bool = typer.Option(False, "-T", "--no-TTY", help="Accepted for docker compose "
                                "compatibility (volmerge compose exec never allocates one)."),
) -> None:
    """Run a command in a service's running container; exit with its code."""
    from volmerge.runtime.options import check_user, parse_env

    if user is not None:
        check_user(user)
    raise typer.Exit(_stack(ctx).exec(service, list(command), env=parse_env(env or []),
                                      user=user, workdir=workdir))


@compose_app.command("run", context_settings=_PASSTHRU)
def run(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="Service."),
    command: list[str] | None = typer.Argument(None, help="Command (default: the service's)."),
    rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
) -> None:
    """A one-off container of a service in the foreground (its dependencies started first;
    no published ports); exit with its code."""
    raise typer.Exit(_stack(ctx, [service]).run(service, list(command) if command else None,
                                                rm=rm))


@compose_app.command("pull")
def pull(
    ctx: typer.Context,
    services: list[str] | None = typer.Argument(None, help="Services (default: all)."),
) -> None:
    """Pull the services' images from their registries."""
    _stack(ctx, services).pull(services or ())


@compose_app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    services: list[str] | None = typer.Argument(None, help="Services (default: all)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="The plan per service; change nothing (exit 1 if a "
                                      "conflict would stop it)."),
    rehearse: bool = typer.Option(False, "--rehearse",
                                  help="Rehearse the whole stack's upgrade on clones of its "
                                       "volumes, the copies together on a private network, "
                                       "then throw them away."),
    pull_: bool = typer.Option(False, "--pull", help="Pull every service's image first."),
    health_timeout: float = typer.Option(60.0, "--health-timeout", metavar="S",
                                         help="Seconds each new container has to be healthy."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Upgrade every service whose image changed with its data merged in (volmerge upgrade),
    in dependency order, as one transaction; a failure puts every service back (exit 1)."""
    from volmerge.compose import stackupgrade
    from volmerge.errors import BadInput
    from volmerge.upgrade.plan import check_timeouts

    if dry_run and rehearse:
        raise BadInput("--dry-run and --rehearse exclude each other")
    check_timeouts(health=health_timeout)
    st = _stack(ctx, services)
    todo = stackupgrade.changes(st, services, pull=pull_)
    if not todo:
        if as_json:
            emit_json([])
        else:
            print("Every service runs its file's image: nothing to upgrade.")
        return
    if dry_run:
        reps = stackupgrade.preview(st, todo, health_timeout)
        stop = any(r["would_stop"] for r in reps)
        if as_json:
            emit_json(reps)
        else:
            for ch, r in zip(todo, reps):
                print(f"Service {ch.service} ({ch.container}): {ch.from_ref} -> {ch.to_ref}")
                for i, s in enumerate(r["steps"], 1):
                    print(f"  {i}. {s}")
                changed = [f for f in r["files"] if f["action"] != "unchanged"]
                for f in changed:
                    print(f"  {f['action']:<12} {f['volume']}:{f['path']}  [{f['strategy']}]")
                    for c in f.get("conflicts") or []:
                        print(f"      conflict at {c.get('location')}: {c.get('message')}")
                for s in r["sql"]:
                    print(f"  sql: {s}")
                if r["would_stop"]:
                    print("  The upgrade of this service would stop on these conflicts.")
            print("Dry run: nothing changed." + (" A conflict would stop it (exit 1)."
                                                 if stop else ""))
        raise typer.Exit(1 if stop else 0)
    if rehearse:
        reps = stackupgrade.rehearse(st, todo, health_timeout)
        if as_json:
            emit_json(reps)
        else:
            print(f"Rehearsal passed for {', '.join(ch.service for ch in todo)}; "
                  "clones thrown away, nothing changed.")
        return
    reps = stackupgrade.upgrade(st, todo, health_timeout=health_timeout)
    if as_json:
        emit_json(reps)
    else:
        for r in reps:
            print(f"Upgraded {r['service']} ({r['container']}): {r['from']} -> {r['to']} "
                  f"(generation {r['generation']})")


@compose_app.command("rollback")
def rollback(
    ctx: typer.Context,
    discard_new_data: bool = typer.Option(
        False, "--discard-new-data",
        help="Drop what the services wrote since the upgrade (refused otherwise when there "
             "is some)."),
    keep_new_data_as: str | None = typer.Option(
        None, "--keep-new-data-as", metavar="PREFIX",
        help="Keep what each service wrote since the upgrade as volume PREFIX-SERVICE "
             "(PREFIX-SERVICE-VOLUME for a service with several volumes)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Return the stack to the generation before its last `compose upgrade`: every service
    it upgraded rolled back (volmerge rollback), newest first."""
    from volmerge.compose import stackupgrade

    rep = stackupgrade.rollback_stack(_stack(ctx), discard_new_data=discard_new_data,
                                      keep_new_data_as=keep_new_data_as)
    if as_json:
        emit_json(rep)
        return
    for s in reversed(rep["services"]):
        print(f"Rolled back {s['service']} ({s['container']}): {s['to_image']} -> "
              f"{s['from_image']}")


@compose_app.command("history")
def history(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The stack's generations: each `compose upgrade`, its services and whether it was
    rolled back."""
    import time

    from volmerge.compose import history as h

    st = _stack(ctx)
    h.settle(st.ctx.store, st.project.name)  # what `volmerge recover` finished or undid
    gens = h.generations(st.ctx.store, st.project.name)
    if as_json:
        emit_json([g.to_json() for g in gens])
        return
    table(["GEN", "CREATED", "STATE", "SERVICES"],
          [[g.gen, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created)), g.state,
            ", ".join(f"{s.service} {s.from_image} -> {s.to_image}" for s in g.services)]
           for g in gens])


@compose_app.command("prune")
def prune(
    ctx: typer.Context,
    keep: int = typer.Option(2, "--keep", metavar="N",
                             help="Generations to keep per service: the current one and the "
                                  "N-1 newest it can roll back to."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="List what would be removed; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Remove the project's upgrade history older than the newest N generations (default 2):
    its services' as `volmerge prune` removes them, and the stack generations `compose
    rollback` can no longer return to, with their journals."""
    from volmerge.compose import stackprune
    from volmerge.upgrade.prune import check_keep

    from .cmd_upgrade import print_prune

    check_keep(keep)
    st = _stack(ctx)
    targets = stackprune.project_targets(st.ctx, st.project.name,
                                         [c.name for c in st.containers()])
    reps = stackprune.prune(st.ctx, targets, keep=keep, dry_run=dry_run) if targets else []
    if as_json:
        emit_json(reps)
        return
    print_prune(reps, dry_run)


@compose_app.command("recover")
def recover(ctx: typer.Context) -> None:
    """Put right a `compose upgrade` or `rollback` a crash cut short (as `volmerge recover`
    does) and settle the stack generation it left open (compose upgrade and rollback do this
    first themselves)."""
    from volmerge.compose import stackupgrade

    gens = stackupgrade.recover(_stack(ctx))
    undone = [str(g) for g, state in gens if state == "failed"]
    finished = [str(g) for g, state in gens if state != "failed"]
    if undone:
        print(f"Rolled back stack generation(s) {', '.join(undone)}.")
    if finished:
        print(f"Finished stack generation(s) {', '.join(finished)}.")
    if not gens:
        print("Nothing to recover.")
