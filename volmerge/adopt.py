"""``volmerge adopt podman:NAME``: take over a container that podman (or
Docker) runs, with its data, so that its next upgrade is a volmerge upgrade.

The container's configuration is read with ``podman container inspect``
and carried as what the operator asked for: a setting equal to the image's
default (command, entrypoint, working directory, user, environment, labels,
health check) is left to the image, so that an upgraded image's defaults
apply as they would under podman. Its image comes from podman's store
(``podman save``) unless volmerge has it already. Each named volume becomes
a volmerge volume whose seed is the image's content at the mount path — the
merge base of the next upgrade — and whose data is the podman volume's,
copied while the container is stopped. The podman container is stopped,
never removed, so the operator can go back (``podman start NAME``); a
failure undoes everything volmerge made and starts it again if it ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volmerge.runtime.options import (
    HealthConfig,
    Mount,
    PortSpec,
    RestartPolicy,
    RunOptions,
    check_name,
    parse_dns,
    parse_dns_search,
)

from .errors import BadInput, NotDone, NotFound

ENGINES = ("podman", "docker")
# Set by podman or Docker in every container, not by the operator.
INJECTED_ENV = {"container", "HOSTNAME"}
ADOPTED_LABEL = "io.volmerge.adopted-from"


@dataclass(frozen=True)
class VolumeCopy:
    """A named volume to bring over: podman's name, its data, where it is mounted."""

    name: str
    source: str
    target: str
    readonly: bool


@dataclass
class Plan:
    engine: str
    container: str                 # the engine's name of it
    container_id: str
    image: str                     # reference (or id) the new container runs
    image_id: str
    running: bool
    options: RunOptions
    volumes: list[VolumeCopy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "container": self.container, "id": self.container_id,
                "image": self.image, "image_id": self.image_id, "running": self.running,
                "name": self.options.name, "options": self.options.to_json(),
                "volumes": [v.__dict__ for v in self.volumes], "warnings": self.warnings}


def parse_source(ref: str) -> tuple[str, str]:
    """``podman:NAME`` or ``docker:NAME`` -> (engine, NAME)."""
    engine, sep, name = ref.partition(":")
    if not sep or engine not in ENGINES:
        raise BadInput(f"invalid source {ref!r}: expected podman:NAME or docker:NAME")
    if not name or name.startswith("-") or any(c.isspace() for c in name):
        raise BadInput(f"invalid source {ref!r}: no container name after {engine}:")
    return engine, name


class Engine:
    """The podman or docker command line, with the caller's environment
    (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, DOCKER_HOST choose the store)."""

    def __init__(self, name: str) -> None:
        exe = shutil.which(name)
        if exe is None:
            raise BadInput(f"{name} is not installed here: nothing to adopt from")
        self.name, self.exe = name, exe

    def __call__(self, *args: str, timeout: float = 600) -> str:
        p = subprocess.run([self.exe, *args], capture_output=True, text=True, errors="replace",
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
            raise NotDone(f"{self.name} {args[0]} failed: {msg}")
        return p.stdout

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        p = subprocess.run([self.exe, kind, "inspect", name], capture_output=True, text=True,
                           errors="replace", timeout=60, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise NotFound(f"no such {self.name} {kind}: {name}")
        try:
            (found,) = json.loads(p.stdout)
        except ValueError as exc:
            raise NotDone(f"{self.name} {kind} inspect {name}: unreadable output") from exc
        return found


def plan(engine: str, info: dict[str, Any], image_config: dict[str, Any],
         new_name: str | None = None) -> Plan:
    """What adopting the container ``info`` (``container inspect``) means, given
    its image's config (``image inspect``'s ``Config``).  Pure."""
    cfg = info.get("Config") or {}
    host = info.get("HostConfig") or {}
    img = image_config or {}
    warnings: list[str] = []
    name = check_name(new_name or str(info.get("Name", "")).lstrip("/"))

    def unless_default(value: Any, default: Any) -> Any:
        return None if _norm(value) == _norm(default) else value

    image_env = dict(_env_pairs(img.get("Env") or []))
    env = {k: v for k, v in _env_pairs(cfg.get("Env") or [])
           if k not in INJECTED_ENV and image_env.get(k) != v
           and not (k in ("HOME", "TERM") and k not in image_env and not _asked_env(cfg, k))}
    labels = {k: v for k, v in (cfg.get("Labels") or {}).items()
              if (img.get("Labels") or {}).get(k) != v}
    labels[ADOPTED_LABEL] = f"{engine}:{info.get('Id', '')[:12]}"

    mounts: list[Mount] = []
    volumes: list[VolumeCopy] = []
    for m in info.get("Mounts") or []:
        target, ro = m.get("Destination", ""), not m.get("RW", True)
        if m.get("Type") == "volume":
            vname = str(m.get("Name", ""))
            if len(vname) == 64 and all(c in "0123456789abcdef" for c in vname):
                slug = "".join(ch if ch.isalnum() else "_" for ch in target.strip("/")) or "root"
                vname = f"{name}_{slug}"  # an anonymous volume: volmerge's name for it
            volumes.append(VolumeCopy(vname, str(m.get("Source", "")), target, ro))
            mounts.append(Mount("volume", target, vname, ro))
        elif m.get("Type") == "bind":
            mounts.append(Mount("bind", target, str(m.get("Source", "")), ro))
        else:
            warnings.append(f"mount {target} of type {m.get('Type')!r} is not carried over")
    for target, opts in sorted((host.get("Tmpfs") or {}).items()):
        keep = [o for o in str(opts).split(",") if o.startswith(("size=", "mode="))]
        mounts.append(Mount("tmpfs", target, "tmpfs", "ro" in str(opts).split(","), keep))

    ports: list[PortSpec] = []
    for key, binds in sorted((host.get("PortBindings") or {}).items()):
        cport, _, proto = key.partition("/")
        for b in binds or []:
            hp = b.get("HostPort") or cport
            ports.append(PortSpec(host_port=int(hp), container_port=int(cport),
                                  proto=proto or "tcp", host_ip=b.get("HostIp") or ""))

    network = host.get("NetworkMode") or "default"
    if network in ("none", "host"):
        net: str | None = network
    elif network in ("default", "bridge", "podman", "slirp4netns", "pasta", "private"):
        net = None  # volmerge's default bridge
    else:
        net = network

    hc = cfg.get("Healthcheck")
    health = None
    if hc and _norm(hc) != _norm(img.get("Healthcheck")):
        health = HealthConfig(test=list(hc.get("Test") or []),
                              interval=_secs(hc.get("Interval"), 30.0),
                              timeout=_secs(hc.get("Timeout"), 30.0),
                              retries=int(hc.get("Retries") or 3),
                              start_period=_secs(hc.get("StartPeriod"), 0.0))
    rp = host.get("RestartPolicy") or {}
    rname = rp.get("Name") or "no"
    if rname == "unless-stopped":
        warnings.append("restart policy unless-stopped is carried as always")
        rname = "always"
    restart = RestartPolicy(rname, int(rp.get("MaximumRetryCount") or 0)) \
        if rname in ("no", "always", "on-failure") else RestartPolicy()

    entrypoint = cfg.get("Entrypoint") or []
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint] if entrypoint else []
    opts = RunOptions(
        image=str(info.get("ImageName") or cfg.get("Image") or info.get("Image")),
        name=name,
        command=unless_default(list(cfg.get("Cmd") or []), img.get("Cmd") or []),
        entrypoint=unless_default(list(entrypoint), img.get("Entrypoint") or []),
        env=env, workdir=unless_default(cfg.get("WorkingDir") or "/", img.get("WorkingDir") or "/"),
        user=unless_default(cfg.get("User") or "", img.get("User") or "") or None,
        mounts=mounts, ports=ports, network=net, health=health, restart=restart,
        labels=labels, memory=int(host.get("Memory") or 0) or None,
        read_only=bool(host.get("ReadonlyRootfs")),
        dns=parse_dns(list(host.get("Dns") or [])),
        dns_search=parse_dns_search(list(host.get("DnsSearch") or []), "DnsSearch"),
        detach=True,
    )
    state = info.get("State") or {}
    return Plan(engine=engine, container=str(info.get("Name", "")).lstrip("/"),
                container_id=str(info.get("Id", "")), image=opts.image,
                image_id=str(info.get("Image", "")).removeprefix("sha256:"),
                running=bool(state.get("Running")), options=opts, volumes=volumes,
                warnings=warnings)


def _env_pairs(items: list[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in (str(e).partition("=") for e in items)]


def _asked_env(cfg: dict[str, Any], key: str) -> bool:
    """Whether the create command set ``key`` with -e/--env (podman records it)."""
    argv = [str(a) for a in cfg.get("CreateCommand") or []]
    return any(a in ("-e", "--env") and i + 1 < len(argv) and argv[i + 1].split("=")[0] == key
               or a.startswith(f"--env={key}=") for i, a in enumerate(argv))


def _norm(value: Any) -> Any:
    return json.dumps(value or None, sort_keys=True)


def _secs(ns: Any, default: float) -> float:
    return int(ns) / 1e9 if ns else default


def adopt(ctx: Any, ref: str, *, new_name: str | None = None, dry_run: bool = False,
          start: bool | None = None) -> Plan:
    """Adopt the container ``ref`` into the store of ``ctx`` (a volmerge
    Context).  ``start``: start it (default: when the original was running)."""
    engine_name, cname = parse_source(ref)
    eng = Engine(engine_name)
    info = eng.inspect("container", cname)
    image_info = eng.inspect("image", str(info.get("Image", "")))
    p = plan(engine_name, info, image_info.get("Config") or {}, new_name)
    _check_free(ctx, p)
    if dry_run:
        return p
    undo: list[Any] = []
    stopped = False
    try:
        _bring_image(ctx, eng, p, undo)
        if p.running:
            eng("stop", "-t", "10", p.container_id)
            stopped = True
        for v in p.volumes:
            _bring_volume(ctx, p, v, undo)
        c = ctx.engine.create(p.options)
        undo.append(lambda: ctx.engine.remove(c.id, force=True))
        if p.running if start is None else start:
            ctx.engine.start(c.id)
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the rest of the undo still runs
                import sys

                from volmerge.runtime import diag

                diag.ignored(__name__, "undo after a failed adopt", exc)
                sys.stderr.write(f"volmerge: warning: undo after a failed adopt: {exc}\n")
        if stopped:
            eng("start", p.container_id)
        raise
    return p


def _check_free(ctx: Any, p: Plan) -> None:
    from volmerge.runtime.errors import NotFound as RuntimeNotFound

    from .errors import Conflict

    try:
        ctx.engine.get(p.options.name)
    except RuntimeNotFound:
        pass
    else:
        raise Conflict(f"a volmerge container named {p.options.name!r} exists already"
                       " (use --name to give the adopted one another name)")
    for v in p.volumes:
        if ctx.volumes.exists(v.name):
            raise Conflict(f"a volmerge volume named {v.name!r} exists already")
        if not os.path.isdir(v.source):
            raise NotFound(f"the data of volume {v.name!r} is not at {v.source}")
    net = p.options.network
    if net not in (None, "none", "host") and not _network_exists(ctx, net):
        raise BadInput(f"network {net!r} does not exist in volmerge: create it first"
                       f" (volmerge network create {net})")


def _network_exists(ctx: Any, name: str) -> bool:
    from volmerge.runtime.errors import NotFound as RuntimeNotFound

    try:
        ctx.network.inspect(name)
    except RuntimeNotFound:
        return False
    return True


def _bring_image(ctx: Any, eng: Engine, p: Plan, undo: list[Any]) -> None:
    """The image in volmerge's store under the container's reference."""
    from volmerge.runtime.errors import NotFound as RuntimeNotFound

    try:
        have = ctx.images.get(p.image_id)
    except RuntimeNotFound:
        have = None
    if have is not None:
        try:
            ctx.images.get(p.image)
        except RuntimeNotFound:
            ctx.images.tag(p.image_id, p.image)
        return
    tmp = ctx.store.tmpdir("adopt-")
    try:
        archive = tmp / "image.tar"
        eng("save", "--format", "oci-archive", "-o", str(archive), p.image)
        img = ctx.images.load(archive, tag=p.image)
    finally:
        from volmerge.runtime import fsutil

        fsutil.rmtree(tmp)
    undo.append(lambda: ctx.images.remove(img.id, force=True))


def _bring_volume(ctx: Any, p: Plan, v: VolumeCopy, undo: list[Any]) -> None:
    from .upgrade.imageview import image_root, inside
    from .volumes.adopted import create_from

    image = ctx.images.get(p.image)
    with image_root(ctx.store, image) as root:
        seed = inside(root, v.target)
        create_from(ctx.volumes, v.name, Path(v.source), seed,
                    labels={ADOPTED_LABEL: f"{p.engine}:{v.name}"})
    undo.append(lambda: ctx.volumes.remove(v.name, force=True))
