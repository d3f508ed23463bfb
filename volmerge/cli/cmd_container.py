"""Container verbs at the top level, Docker-style: run ps stop start restart
kill rm logs exec inspect wait pause unpause (and create).

Thin: parse, call runtime.containers.Engine, print.  The runtime is imported
inside each command so that ``volmerge run`` does not pay for what it does
not use.
"""

from __future__ import annotations

import sys
import time
from inspect import signature
from typing import Any

import typer

from .common import emit_json, store, table
from .fastlife import all_known

_PASSTHRU = {"allow_interspersed_args": False}


def _engine(ctx: typer.Context):
    """The one place the CLI builds an Engine (the lead wires the layered
    volume manager and the network manager here)."""
    from volmerge.context import make_engine

    return make_engine(store(ctx))


def _net(eng, c) -> dict:
    """Network, address and published ports of a container (its lease when
    stopped: the address it keeps across stop/start)."""
    net = c.options.network
    if net in ("none", "host") or eng.network is None:
        return {"network": net or "none", "ip": None, "ports": []}
    att = eng.network.attachment(c.id)
    if att is not None:
        name, ip, ports = att.network, att.ip, att.ports
    else:
        leases = eng.network.leases(container_id=c.id)
        if not leases:
            return {"network": net or "bridge", "ip": None, "ports": []}
        name, ip, ports = leases[0].network, leases[0].ip, leases[0].ports
    return {"network": name, "ip": ip,
            "ports": [f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.proto}" for p in ports]}


def _record(eng, c) -> dict:
    """A container as ``ps --json`` and ``inspect --json`` print it (the same
    keys in both): its record, network, address, ports and sockets."""
    return {**c.to_json(), **_net(eng, c), "sockets": [  # --socket-activate
        f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}/tcp"
        for p in c.options.socket_activate]}


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    d = max(0, time.time() - ts)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if d >= n:
            k = int(d // n)
            return f"{k} {unit}{'s' if k != 1 else ''}"
    k = int(d)
    return "Less than a second" if k == 0 else f"{k} second{'s' if k != 1 else ''}"


def _status(c) -> str:
    if c.state == "running":
        h = f" ({c.health})" if c.health else ""
        return f"Up {_ago(c.started_at)}{h}"
    if c.state == "paused":
        return f"Up {_ago(c.started_at)} (Paused)"
    if c.state == "restarting":
        return f"Restarting ({c.exit_code}) {_ago(c.finished_at or c.started_at)} ago"
    if c.state == "exited":
        return f"Exited ({c.exit_code}) {_ago(c.finished_at)} ago"
    return c.state.capitalize()


def _command(c) -> str:
    cfg = c.image_config.get("config") or {}
    o = c.options
    if o.entrypoint is not None:
        argv = list(o.entrypoint) + list(o.command or [])
    else:
        argv = list(cfg.get("Entrypoint") or []) + list(o.command or cfg.get("Cmd") or [])
    s = " ".join(argv)
    return '"' + (s if len(s) <= 20 else s[:19] + "…") + '"'


#: run's options that create does not take: a created container is started
#: detached, and a terminal is for a foreground run only
NOT_CREATE = ("detach", "interactive", "tty")


def register(app: typer.Typer) -> None:  # noqa: C901 - one command per function below
    @app.command(context_settings=_PASSTHRU, no_args_is_help=True)
    def run(
        ctx: typer.Context,
        image: str = typer.Argument(..., help="Image reference (or an absolute rootfs directory)."),
        command: list[str] | None = typer.Argument(None, help="Command and arguments (default: the image's)."),
        detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background; print the id."),
        interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin attached (a foreground run always does)."),
        tty: bool = typer.Option(False, "-t", "--tty", help="Give the container a terminal (foreground; stdin must be one)."),
        rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
        name: str | None = typer.Option(None, "--name", help="Container name."),
        env: list[str] | None = typer.Option(None, "-e", "--env", help="KEY=VALUE, or KEY to pass the caller's value (repeatable)."),
        env_file: list[str] | None = typer.Option(None, "--env-file", help="A file of KEY=VALUE lines (repeatable; -e wins)."),
        workdir: str | None = typer.Option(None, "-w", "--workdir", help="Working directory."),
        user: str | None = typer.Option(None, "-u", "--user", help="USER[:GROUP] (names or ids)."),
        entrypoint: str | None = typer.Option(None, "--entrypoint", help="Override the image's entrypoint."),
        volume: list[str] | None = typer.Option(None, "-v", "--volume", help="/host:/path[:ro] or NAME:/path[:ro]."),
        tmpfs: list[str] | None = typer.Option(None, "--tmpfs", help="/path[:size=64m,mode=1777]."),
        publish: list[str] | None = typer.Option(None, "-p", "--publish", help="[IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]."),
        socket_activate: list[str] | None = typer.Option(None, "--socket-activate", help="[IP:]HOST_PORT[:CONTAINER_PORT]: a TCP socket volmerge listens on and passes in as fd 3 (LISTEN_FDS), held open across upgrades (repeatable)."),
        network: str | None = typer.Option(None, "--network", help="Network to join: a network name (default: the default network, created on first use), none, or host."),
        ip: str | None = typer.Option(None, "--ip", help="Address on the network."),
        hostname: str | None = typer.Option(None, "--hostname", help="Host name (default: short id)."),
        dns: list[str] | None = typer.Option(None, "--dns", help="Nameserver for /etc/resolv.conf instead of the host's (repeatable)."),
        dns_search: list[str] | None = typer.Option(None, "--dns-search", help="Search domain instead of the host's (repeatable)."),
        add_host: list[str] | None = typer.Option(None, "--add-host", help="HOST:IP line for /etc/hosts (repeatable)."),
        health_cmd: str | None = typer.Option(None, "--health-cmd", help="Health check command (run by /bin/sh -c)."),
        health_interval: str | None = typer.Option(None, "--health-interval", help="Time between checks (30s)."),
        health_timeout: str | None = typer.Option(None, "--health-timeout", help="Time a check may take (30s)."),
        health_retries: int | None = typer.Option(None, "--health-retries", help="Failures in a row until unhealthy (3)."),
        health_start_period: str | None = typer.Option(None, "--health-start-period", help="Grace period after start (0s)."),
        health_tcp: int | None = typer.Option(None, "--health-tcp", help="Healthy when this TCP port accepts."),
        health_http: str | None = typer.Option(None, "--health-http", help="Healthy when this URL answers 2xx/3xx."),
        no_healthcheck: bool = typer.Option(False, "--no-healthcheck", help="Disable the image's health check."),
        restart: str | None = typer.Option(None, "--restart", help="no | on-failure[:N] | always."),
        runtime: str | None = typer.Option(None, "--runtime", help="runc | builtin (default: runc when installed)."),
        label: list[str] | None = typer.Option(None, "-l", "--label", help="KEY=VALUE (repeatable)."),
        memory: str | None = typer.Option(None, "-m", "--memory", help="Memory limit (e.g. 256m)."),
        pids_limit: int | None = typer.Option(None, "--pids-limit", help="Maximum number of processes."),
        read_only: bool = typer.Option(False, "--read-only", help="Mount the root file system read-only (add --tmpfs for scratch space)."),
    ) -> None:
        """Run a command in a new container (foreground unless -d)."""
        from .runopts import run_container, run_options

        kw = dict(locals())
        kw.pop("ctx"), kw.pop("image"), kw.pop("command")
        raise typer.Exit(run_container(store(ctx), run_options(image, command, **kw)))

    def create(ctx: typer.Context, image: str, command: list[str] | None, **kw: Any) -> None:
        """Create a container without starting it; print its id.  It takes
        run's options (as docker and podman create do), but -d, -i and -t:
        `volmerge start` runs it detached."""
        from .runopts import run_options

        opts = run_options(image, command, **dict.fromkeys(NOT_CREATE, False), **kw)
        print(_engine(ctx).create(opts).id)

    # run's parameters, their help and checks, without a second copy of them
    sig = signature(run, eval_str=True)
    create.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for p in sig.parameters.values() if p.name not in NOT_CREATE])
    app.command(context_settings=_PASSTHRU, no_args_is_help=True)(create)

    @app.command()
    def ps(
        ctx: typer.Context,
        all: bool = typer.Option(False, "-a", "--all", help="Show stopped containers too."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids."),
        json_: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List containers (running ones unless -a)."""
        eng = _engine(ctx)
        cs = eng.list(all=all)
        if json_:
            emit_json([_record(eng, c) for c in cs])
        elif quiet:
            for c in cs:
                print(c.short_id)
        else:
            table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
                  [[c.short_id, c.image_ref, _command(c), _ago(c.created) + " ago", _status(c),
                    ", ".join(_net(eng, c)["ports"]) if c.state == "running" else "", c.name]
                   for c in cs])

    @app.command(no_args_is_help=True)
    def stop(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        time_: float = typer.Option(10, "-t", "--time", "--timeout", help="Seconds before SIGKILL (-1: wait without limit, as podman)."),
    ) -> None:
        """Stop running containers (SIGTERM, then SIGKILL after the timeout)."""
        from volmerge.runtime.options import check_seconds

        time_ = check_seconds(time_, "-t", forever=True)
        eng = _engine(ctx)
        all_known(eng.get, containers)
        for ref in containers:
            eng.stop(ref, time_, autoremove=True)  # a --rm one goes, as Docker's
            print(ref)

    @app.command(no_args_is_help=True)
    def start(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        attach: bool = typer.Option(False, "-a", "--attach", help="Run in the foreground (one container)."),
    ) -> None:
        """Start stopped containers."""
        eng = _engine(ctx)
        all_known(eng.get, containers)
        if attach:
            if len(containers) != 1:
                from volmerge.runtime.errors import BadInput

                raise BadInput("--attach takes exactly one container")
            raise typer.Exit(int(eng.start(containers[0], attach=True) or 0))
        for ref in containers:
            eng.start(ref)
            print(ref)

    @app.command(no_args_is_help=True)
    def restart(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        time_: float = typer.Option(10, "-t", "--time", "--timeout", help="Seconds before SIGKILL (-1: wait without limit, as podman)."),
    ) -> None:
        """Stop and start containers again."""
        from volmerge.runtime.options import check_seconds

        time_ = check_seconds(time_, "-t", forever=True)
        eng = _engine(ctx)
        all_known(eng.get, containers)
        for ref in containers:
            eng.restart(ref, time_)
            print(ref)

    @app.command(no_args_is_help=True)
    def kill(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        signal_: str = typer.Option("KILL", "-s", "--signal", help="Signal name or number."),
    ) -> None:
        """Send a signal to running containers (default SIGKILL)."""
        eng = _engine(ctx)
        all_known(eng.get, containers)
        for ref in containers:
            eng.kill(ref, signal_)
            print(ref)

    @app.command(no_args_is_help=True)
    def rm(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        force: bool = typer.Option(False, "-f", "--force", help="Kill running containers first."),
    ) -> None:
        """Remove containers and their container layers."""
        eng = _engine(ctx)
        all_known(eng.get, containers, stopped=not force)
        for ref in containers:
            eng.remove(ref, force=force)
            print(ref)

    @app.command(no_args_is_help=True)
    def logs(
        ctx: typer.Context,
        container: str = typer.Argument(..., help="Name or id."),
        follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing until it exits."),
        tail: str | None = typer.Option(None, "-n", "--tail", help="Only the last N lines (all: every line)."),
        since: str | None = typer.Option(None, "--since", help="Only lines written since: a duration ago (10m, 2h) or a unix time."),
        timestamps: bool = typer.Option(False, "-t", "--timestamps", help="Prefix each line with its time (RFC 3339, UTC)."),
    ) -> None:
        """Print the output of a detached container."""
        import datetime

        from volmerge.runtime.errors import BadInput
        from volmerge.runtime.options import parse_duration

        n = None
        if tail is not None and tail != "all":
            if not tail.isdigit():
                raise BadInput(f"bad --tail {tail!r}: a number of lines or 'all'")
            n = int(tail)
        t0 = None
        if since is not None:
            try:
                t0 = float(since)
            except ValueError:
                t0 = time.time() - parse_duration(since)
            else:
                if not 0 <= t0 < float("inf"):
                    raise BadInput(f"bad --since {since!r}: a duration ago (10m, 2h) or a unix time")
        out, err = sys.stdout, sys.stderr
        at_line_start = {"stdout": True, "stderr": True}
        for stream, text, t in _engine(ctx).logs(container, follow=follow, tail=n, since=t0):
            f = err if stream == "stderr" else out
            if timestamps and at_line_start.get(stream, True):
                stamp = datetime.datetime.fromtimestamp(t, datetime.UTC)
                f.write(stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + " ")
            at_line_start[stream] = text.endswith("\n")
            f.write(text)
            if follow:
                f.flush()

    @app.command("exec", context_settings=_PASSTHRU, no_args_is_help=True)
    def exec_(
        ctx: typer.Context,
        container: str = typer.Argument(..., help="Name or id."),
        command: list[str] = typer.Argument(..., help="Command and arguments."),
        env: list[str] | None = typer.Option(None, "-e", "--env", help="KEY=VALUE, or KEY to pass the caller's value (repeatable)."),
        user: str | None = typer.Option(None, "-u", "--user", help="USER[:GROUP]."),
        workdir: str | None = typer.Option(None, "-w", "--workdir", help="Working directory (absolute; default: the container's)."),
        interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin attached (always is)."),
        tty: bool = typer.Option(False, "-t", "--tty", help="On a terminal (stdin must be one)."),
    ) -> None:
        """Run a command in a running container; exit with its code."""
        import os

        from volmerge.runtime.errors import BadInput
        from volmerge.runtime.options import check_user, parse_env

        if user is not None:
            check_user(user)
        if workdir is not None and not workdir.startswith("/"):
            raise BadInput(f"working directory {workdir!r} must be absolute")
        if tty and not os.isatty(0):
            raise BadInput("the input device is not a TTY (-t needs a terminal on stdin)")
        code = _engine(ctx).exec(container, list(command), env=parse_env(env or []), user=user,
                                 workdir=workdir, tty=tty)
        raise typer.Exit(code)

    @app.command(no_args_is_help=True)
    def inspect(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        json_: bool = typer.Option(False, "--json", help="JSON (the default prints key: value)."),
    ) -> None:
        """Show the state, options and mounts of containers."""
        eng = _engine(ctx)
        data = []
        for ref in containers:
            data.append(_record(eng, eng.get(ref)))
        if json_:
            emit_json(data)
            return
        for d in data:
            for k in ("id", "name", "image", "state", "runtime", "pid", "exit_code", "health",
                      "restart_count", "error", "network", "ip", "ports", "sockets", "rootfs", "upper", "log"):
                v = d[k]  # lists (ports, sockets) as words, not as Python's repr
                print(f"{k}: {', '.join(v) if isinstance(v, list) else '' if v is None else v}")
            for m in d["mounts"]:
                print(f"mount: {m['kind']} {m['source']} -> {m['target']}"
                      + (" (ro)" if m.get("readonly") else ""))
            print()

    @app.command(no_args_is_help=True)
    def wait(
        ctx: typer.Context,
        containers: list[str] = typer.Argument(..., help="Names or ids."),
        healthy: bool = typer.Option(False, "--healthy", help="Wait until healthy instead of until exit."),
        timeout: float | None = typer.Option(None, "--timeout", help="Give up (exit 1) after S seconds."),
    ) -> None:
        """Wait until containers exit (print exit codes) or, with --healthy,
        until they pass their health check (exit 1 if they do not in time)."""
        from volmerge.runtime.options import check_seconds

        if timeout is not None:
            check_seconds(timeout, "--timeout")
        eng = _engine(ctx)
        for ref in containers:
            print(eng.wait(ref, healthy=healthy, timeout=timeout))

    @app.command(no_args_is_help=True)
    def pause(ctx: typer.Context, containers: list[str] = typer.Argument(..., help="Names or ids.")) -> None:
        """Freeze every process of running containers."""
        eng = _engine(ctx)
        all_known(eng.get, containers)
        for ref in containers:
            eng.pause(ref)
            print(ref)

    @app.command(no_args_is_help=True)
    def unpause(ctx: typer.Context, containers: list[str] = typer.Argument(..., help="Names or ids.")) -> None:
        """Thaw paused containers."""
        eng = _engine(ctx)
        all_known(eng.get, containers)
        for ref in containers:
            eng.unpause(ref)
            print(ref)
