"""``volmerge run``'s arguments to RunOptions, and the run itself: one
implementation for the typer command and the fast path (fastrun.py).
Imports nothing heavy."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

#: the options that configure a health check, which --no-healthcheck turns off
_HEALTH_OPTIONS = ("health_cmd", "health_tcp", "health_http", "health_interval", "health_timeout",
                   "health_retries", "health_start_period")


def run_options(image: str, command: list[str] | None, **kw: Any) -> Any:
    """RunOptions from the parsed ``run`` arguments (names as the typer command's)."""
    from volmerge.runtime import options as o

    _check(o, kw)
    health = None
    if kw["no_healthcheck"]:
        health = o.HealthConfig(test=["NONE"])
    elif any(kw[k] is not None for k in ("health_cmd", "health_tcp", "health_http")):
        health = o.HealthConfig(
            test=["CMD-SHELL", kw["health_cmd"]] if kw["health_cmd"] else [],
            interval=o.parse_duration(kw["health_interval"] or "30s"),
            timeout=o.parse_duration(kw["health_timeout"] or "30s"),
            retries=kw["health_retries"] if kw["health_retries"] is not None else 3,
            start_period=o.parse_duration(kw["health_start_period"] or "0s"),
            tcp_port=kw["health_tcp"], http_url=kw["health_http"],
        )
    env = [e for f in kw["env_file"] or [] for e in o.read_env_file(f)] + (kw["env"] or [])
    mounts = [o.parse_volume(v) for v in kw["volume"] or []]
    mounts += [o.parse_tmpfs(t) for t in kw["tmpfs"] or []]
    labels = {}
    for item in kw["label"] or []:
        k, _, v = item.partition("=")
        labels[k] = v
    opts = o.RunOptions(
        image=image, name=kw["name"], command=list(command) if command else None,
        entrypoint=None if kw["entrypoint"] is None else ([kw["entrypoint"]] if kw["entrypoint"] else []),
        env=o.parse_env(env), workdir=kw["workdir"], user=kw["user"], mounts=mounts,
        ports=[o.parse_port(p) for p in kw["publish"] or []], network=kw["network"], ip=kw["ip"],
        hostname=kw["hostname"], health=health,
        restart=o.parse_restart(kw["restart"] or "no"), runtime=kw["runtime"], rm=kw["rm"],
        detach=kw["detach"], labels=labels,
        memory=o.parse_bytes(kw["memory"]) if kw["memory"] else None,
        pids_limit=None if kw["pids_limit"] == -1 else kw["pids_limit"],
        read_only=kw["read_only"], tty=kw["tty"],
        dns=o.parse_dns(kw["dns"] or []), dns_search=o.parse_dns_search(kw["dns_search"] or []),
        extra_hosts=o.parse_add_host(kw["add_host"] or []),
        socket_activate=[o.parse_socket_activate(s) for s in kw["socket_activate"] or []],
    )
    if opts.socket_activate:
        o.check_socket_activate(opts)
    return opts


def _check(o: Any, kw: dict[str, Any]) -> None:
    """Every value that needs no image or store, checked before anything is
    made (a network, a container, a lock): bad input changes nothing."""
    from volmerge.runtime.errors import BadInput

    if kw["name"] is not None:
        o.check_name(kw["name"])
    if kw["hostname"] is not None:
        o.check_hostname(kw["hostname"])
    if kw["user"] is not None:
        o.check_user(kw["user"])
    if kw["ip"] is not None:
        o.check_ip(kw["ip"])
    for item in kw["label"] or []:
        if not item.partition("=")[0].strip():
            raise BadInput(f"invalid label {item!r}: empty name (expected KEY=VALUE)")
    if kw["no_healthcheck"] and any(kw[k] is not None for k in _HEALTH_OPTIONS):
        raise BadInput("--no-healthcheck conflicts with the --health-* options (as in docker)")
    if kw["pids_limit"] is not None:
        o.check_pids_limit(kw["pids_limit"])
    if kw["health_tcp"] is not None:
        o.check_port(kw["health_tcp"], "--health-tcp port")
    if kw["health_http"] is not None:
        o.check_http_url(kw["health_http"])
    if kw["health_retries"] is not None and kw["health_retries"] < 0:
        raise BadInput(f"invalid --health-retries {kw['health_retries']}: expected a number >= 0")


def run_container(st: Any, opts: Any) -> int:
    """Run in the foreground (the container's exit code) or, with -d,
    create, start and print the id (0)."""
    import os

    from volmerge.context import make_engine
    from volmerge.runtime.errors import BadInput

    if opts.tty and opts.detach:
        raise BadInput("-t needs a foreground run: -d with -t is not supported")
    if opts.tty and not os.isatty(0):
        raise BadInput("the input device is not a TTY (-t needs a terminal on stdin)")
    eng = make_engine(st)
    if not opts.detach:
        return int(eng.run(opts))
    c = eng.create(opts)
    try:
        eng.start(c.id)
    except BaseException as exc:
        from volmerge.runtime.errors import BadInput

        if isinstance(exc, BadInput):
            eng.remove(c.id, force=True)
        raise
    print(c.id)
    return 0
