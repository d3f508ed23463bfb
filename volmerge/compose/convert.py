"""A compose service to the ``RunOptions`` of ``volmerge run``, named and
labelled as docker compose names and labels its containers.

Containers are ``PROJECT-SERVICE-1`` (or ``container_name``), networks
``PROJECT_NAME`` (``PROJECT_default`` for services that name none), volumes
``PROJECT_NAME``; an anonymous volume (``- /data``) gets a stable name of
its own (``PROJECT_SERVICE_<hash of the path>``) so a recreated container
keeps it.  Every container carries ``com.docker.compose.project``,
``.service``, ``.container-number``, ``.oneoff`` and ``.config-hash``: the
hash of the service's normalized model, which tells ``up`` whether a
container still matches its file.  Pure: no store, no engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from typing import TYPE_CHECKING, Any

from volmerge.errors import BadInput

if TYPE_CHECKING:
    from volmerge.runtime.options import RunOptions

    from .loader import Project

L_PROJECT = "com.docker.compose.project"
L_SERVICE = "com.docker.compose.service"
L_NUMBER = "com.docker.compose.container-number"
L_ONEOFF = "com.docker.compose.oneoff"
L_HASH = "com.docker.compose.config-hash"
L_WORKDIR = "com.docker.compose.project.working_dir"
L_FILES = "com.docker.compose.project.config_files"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def container_name(project: Project, service: str, number: int = 1) -> str:
    return str(project.services[service].get("container_name")
               or f"{project.name}-{service}-{number}")


def network_names(project: Project) -> dict[str, tuple[str, bool]]:
    """Each network the project uses: its key -> (real name, external?)."""
    out: dict[str, tuple[str, bool]] = {}
    for svc in project.services.values():
        for n in service_networks(svc):
            cfg = project.networks.get(n) or {}
            external = bool(cfg.get("external"))
            out[n] = (cfg.get("name") or (n if external else f"{project.name}_{n}"), external)
    return out


def service_networks(svc: dict[str, Any]) -> list[str]:
    return list(svc.get("networks") or {}) or ["default"]


def volume_name(project: Project, key: str) -> str:
    cfg = project.volumes.get(key) or {}
    if cfg.get("name"):
        return str(cfg["name"])
    return key if cfg.get("external") else f"{project.name}_{key}"


def named_volumes(svc: dict[str, Any]) -> list[str]:
    """The top-level volume keys a service mounts."""
    out = []
    for v in svc.get("volumes") or []:
        kind, source, _t, _ro, _o = _volume(v)
        if kind == "volume" and source:
            out.append(source)
    return out


def anonymous_volume(project: Project, service: str, target: str) -> str:
    return f"{project.name}_{service}_{hashlib.sha256(target.encode()).hexdigest()[:12]}"


def config_hash(svc: dict[str, Any]) -> str:
    """The hash of everything but ``image``: ``up`` compares the image
    itself (reference and id), so a container that ``compose upgrade`` moved
    to the file's new image counts as current."""
    rest = {k: v for k, v in svc.items() if k != "image"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def duration(v: Any, what: str) -> float:
    """Compose durations: ``1m30s``, ``500ms``, ``10s``, or a number of seconds."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise BadInput(f"{what}: bad duration {v!r}: expected e.g. 1m30s, 10s, 500ms")
    return total


def run_options(project: Project, name: str, *, number: int = 1, oneoff: bool = False,
                command: list[str] | None = None) -> RunOptions:
    """The RunOptions that ``up`` (or ``run``) creates the service's container with."""
    from volmerge.runtime import options as o

    svc = project.services[name]
    where = f"services.{name}"
    env = _environment(project, svc, where)
    labels = {str(k): "" if v is None else str(v) for k, v in (svc.get("labels") or {}).items()}
    labels.update({L_PROJECT: project.name, L_SERVICE: name, L_NUMBER: str(number),
                   L_ONEOFF: "True" if oneoff else "False", L_HASH: config_hash(svc),
                   L_WORKDIR: project.directory, L_FILES: ",".join(project.files)})
    net_key = service_networks(svc)[0]
    net_name = network_names(project)[net_key][0]
    net_cfg = (svc.get("networks") or {}).get(net_key) or {}
    aliases = list(dict.fromkeys([name, *map(str, net_cfg.get("aliases") or [])]))
    for alias in aliases[1:]:  # each goes into the /etc/hosts of every peer on the network
        if alias and not re.fullmatch(r"[a-zA-Z0-9._-]{1,253}", alias):
            raise BadInput(f"{where}.networks.{net_key}.aliases: invalid alias {alias!r}: use "
                           "letters, digits, '.', '_' and '-'")
    restart = str(svc.get("restart") or "no")
    return o.RunOptions(
        image=str(svc["image"]),
        name=(f"{project.name}-{name}-run-{os.urandom(4).hex()}" if oneoff
              else container_name(project, name, number)),
        command=command if command is not None else _argv(svc.get("command"), f"{where}.command"),
        entrypoint=_argv(svc.get("entrypoint"), f"{where}.entrypoint"),
        env=env, workdir=svc.get("working_dir"),
        user=o.check_user(str(svc["user"])) if svc.get("user") is not None else None,
        mounts=_mounts(project, name, svc, where),
        ports=[] if oneoff else [_port(p, f"{where}.ports") for p in svc.get("ports") or []],
        network=net_name, ip=net_cfg.get("ipv4_address"),
        hostname=o.check_hostname(str(svc["hostname"])) if svc.get("hostname") else None,
        health=_health(svc.get("healthcheck"), where),
        restart=o.RestartPolicy() if oneoff else o.parse_restart(restart),
        detach=not oneoff, labels=labels,
        memory=_bytes(svc.get("mem_limit"), f"{where}.mem_limit"),
        pids_limit=int(svc["pids_limit"]) if svc.get("pids_limit") not in (None, -1) else None,
        read_only=_bool(svc.get("read_only", False), f"{where}.read_only"),
        dns=o.parse_dns(_list(svc.get("dns"))), dns_search=o.parse_dns_search(_list(svc.get("dns_search")), f"{where}.dns_search"),
        aliases=[a for a in aliases if a],
        extra_hosts=extra_hosts(svc.get("extra_hosts"), f"{where}.extra_hosts"),
        socket_activate=[] if oneoff else _socket_activate(labels, f"{where}.labels"),
        stop_signal=str(svc["stop_signal"]) if svc.get("stop_signal") else None,
    )


def extra_hosts(v: Any, what: str) -> list[str]:
    """``extra_hosts`` (a mapping after merge.normalize_service: host to an
    address or a list of them) as ``--add-host`` entries, checked as run checks them."""
    from volmerge.runtime import options as o

    if not v:
        return []
    if not isinstance(v, dict):
        raise BadInput(f"{what}: expected a list of HOST:IP or a mapping")
    items = [f"{host}={ip}" for host, ips in v.items()
             for ip in (ips if isinstance(ips, list) else [ips])]
    return o.parse_add_host(items, what)


def stop_timeout(svc: dict[str, Any], name: str) -> float:
    v = svc.get("stop_grace_period")
    return 10.0 if v is None else duration(v, f"services.{name}.stop_grace_period")


def _list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def _bool(v: Any, what: str = "value") -> bool:
    """YAML's booleans, also as the strings interpolation leaves."""
    if isinstance(v, str):
        low = v.lower()
        if low in ("true", "yes", "1", "on", "y"):
            return True
        if low in ("false", "no", "0", "off", "n", ""):
            return False
        raise BadInput(f"{what}: {v!r} is not a boolean (true or false)")
    return bool(v)


def _bytes(v: Any, what: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    from volmerge.runtime.options import parse_bytes

    s = str(v).strip().lower()
    return parse_bytes(s[:-1] if s.endswith("b") and len(s) > 1 and s[-2].isalpha() else s)


def _argv(v: Any, what: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, list):
        return [str(x) for x in v]
    try:
        return shlex.split(str(v))
    except ValueError as exc:
        raise BadInput(f"{what}: {exc}") from None


def _environment(project: Project, svc: dict[str, Any], where: str) -> dict[str, str]:
    from . import envfile

    env: dict[str, str] = {}
    for item in svc.get("env_file") or []:
        path, required = (item, True) if isinstance(item, str) else \
            (item["path"], _bool(item.get("required", True)))
        if not os.path.isfile(path):
            if required:
                raise BadInput(f"{where}.env_file: {path} does not exist")
            continue
        env.update(envfile.read(path, project.environment))
    for k, v in (svc.get("environment") or {}).items():
        if v is None:
            if k in project.environment:
                env[k] = project.environment[k]
            continue
        env[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return env


def _volume(v: Any) -> tuple[str, str, str, bool, dict[str, Any]]:
    """(kind, source, target, read_only, extra) of a short or long volume."""
    if isinstance(v, dict):
        kind = str(v.get("type") or "volume")
        return (kind, str(v.get("source") or ""), str(v.get("target") or ""),
                _bool(v.get("read_only", False)), dict(v.get("tmpfs") or {}))
    parts = str(v).split(":")
    if len(parts) == 1:
        return "volume", "", parts[0], False, {}
    mode = parts[2] if len(parts) > 2 else "rw"
    modes = set(mode.split(","))
    if not modes <= {"ro", "rw"} or len(parts) > 3:
        raise BadInput(f"volume {v!r}: mode {mode!r} is not supported (ro or rw)")
    kind = "bind" if parts[0][:1] in ("/", ".", "~") else "volume"
    return kind, parts[0], parts[1], "ro" in modes, {}


def _mounts(project: Project, name: str, svc: dict[str, Any], where: str) -> list[Any]:
    from volmerge.runtime import options as o

    out = []
    for i, v in enumerate(svc.get("volumes") or []):
        kind, source, target, ro, extra = _volume(v)
        what = f"{where}.volumes[{i}]"
        if not target.startswith("/") or ".." in target.split("/") or target.rstrip("/") == "":
            raise BadInput(f"{what}: target {target!r} must be an absolute path, not /")
        if kind == "bind":
            out.append(o.Mount("bind", target, os.path.realpath(source), ro))
        elif kind == "volume":
            vol = volume_name(project, source) if source else anonymous_volume(project, name,
                                                                                 target)
            out.append(o.Mount("volume", target, vol, ro))
        else:
            opts = []
            if extra.get("size") is not None:
                opts.append(f"size={_bytes(extra['size'], what)}")
            if extra.get("mode") is not None:
                m = extra["mode"]
                opts.append(f"mode={m:o}" if isinstance(m, int) else f"mode={m}")
            out.append(o.parse_tmpfs(target + (":" + ",".join(opts) if opts else "")))
    for t in _list(svc.get("tmpfs")):
        out.append(o.parse_tmpfs(t))
    return out


L_SOCKET_ACTIVATE = "io.volmerge.socket-activate"


def _socket_activate(labels: dict[str, str], what: str) -> list[Any]:
    """``io.volmerge.socket-activate: "[IP:]HOST_PORT[:CONTAINER_PORT],..."``:
    ``run --socket-activate`` for the service (docs/network.md)."""
    from volmerge.runtime import options as o
    from volmerge.runtime.errors import BadInput as RuntimeBadInput

    try:
        return [o.parse_socket_activate(x.strip())
                for x in labels.get(L_SOCKET_ACTIVATE, "").split(",") if x.strip()]
    except RuntimeBadInput as exc:
        raise BadInput(f"{what}.{L_SOCKET_ACTIVATE}: {exc}") from None


def _port(p: Any, what: str) -> Any:
    from volmerge.runtime import options as o

    if isinstance(p, dict):
        if p.get("published") in (None, ""):
            raise BadInput(f"{what}: a port without 'published' (a random host port) "
                           "is not supported")
        if p.get("target") in (None, ""):
            raise BadInput(f"{what}: a port without 'target' (the container port)")
        pub = str(p["published"])
        if not pub.isdigit():
            raise BadInput(f"{what}: published port {pub!r}: ranges are not supported")
        host_ip = p.get("host_ip")
        spec = f"{host_ip}:{pub}:{p['target']}" if host_ip else f"{pub}:{p['target']}"
        return o.parse_port(f"{spec}/{p.get('protocol') or 'tcp'}")
    s = str(p)
    body = s.partition("/")[0]
    if ":" not in body:
        raise BadInput(f"{what}: {s!r}: a container port alone (a random host port) "
                       "is not supported: write HOST:CONTAINER")
    if "-" in body:
        raise BadInput(f"{what}: {s!r}: port ranges are not supported")
    return o.parse_port(s)


def _health(hc: dict[str, Any] | None, where: str) -> Any:
    from volmerge.runtime import options as o

    if hc is None:
        return None
    if _bool(hc.get("disable", False)):
        return o.HealthConfig(test=["NONE"])
    test = hc.get("test")
    if test is None:
        raise BadInput(f"{where}.healthcheck: a healthcheck without 'test' (the image's test "
                       "with other timings) is not supported")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    test = [str(t) for t in test]
    if test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise BadInput(f"{where}.healthcheck.test: the first item must be CMD, CMD-SHELL or NONE")

    def dur(key: str, default: float) -> float:
        v = hc.get(key)
        return default if v is None else duration(v, f"{where}.healthcheck.{key}")

    return o.HealthConfig(test=test, interval=dur("interval", 30.0), timeout=dur("timeout", 30.0),
                          retries=int(hc.get("retries", 3)),
                          start_period=dur("start_period", 0.0))
