"""What volmerge runs of the Compose Specification, and the checks of a
merged project: every key volmerge would not honour is named, with where it
was written, in one error (exit 2) — never silently ignored — and every
reference (``depends_on``, a service's ``networks`` and named ``volumes``)
must name something the project defines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from volmerge.errors import BadInput

if TYPE_CHECKING:
    from .loader import Project

SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "volumes", "ports",
    "networks", "depends_on", "healthcheck", "restart", "user", "working_dir", "labels",
    "read_only", "tmpfs", "stop_signal", "stop_grace_period", "hostname", "container_name",
    "extra_hosts",
    "profiles", "pull_policy", "expose", "dns", "dns_search", "mem_limit", "pids_limit",
})
TOP_KEYS = frozenset({"version", "name", "services", "volumes", "networks", "include"})
VOLUME_KEYS = frozenset({"name", "external", "driver"})
NETWORK_KEYS = frozenset({"name", "external", "driver"})
SERVICE_NETWORK_KEYS = frozenset({"aliases", "ipv4_address"})
LONG_VOLUME_KEYS = frozenset({"type", "source", "target", "read_only", "volume", "bind", "tmpfs"})
LONG_PORT_KEYS = frozenset({"target", "published", "host_ip", "protocol", "mode", "name"})
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


def check(project: Project) -> None:
    """Raise BadInput naming every unsupported key, else the first bad reference."""
    bad: list[tuple[tuple[Any, ...], str]] = []
    _unsupported(project, bad)
    if bad:
        shown = [f"{project.where(p)}: {k}" for p, k in bad]
        head = (f"not supported by volmerge compose ({len(bad)}): " if len(bad) > 1
                else "not supported by volmerge compose: ")
        raise BadInput(head + "; ".join(shown))
    _references(project)


def _is_ext(key: str) -> bool:
    return key.startswith("x-")


def _unsupported(project: Project, bad: list[tuple[tuple[Any, ...], str]]) -> None:
    for pos in project.positions:
        for path in pos.lines:
            if len(path) == 1 and path[0] not in TOP_KEYS and not _is_ext(path[0]):
                if (path, path[0]) not in bad:
                    bad.append((path, path[0]))
    for name, svc in project.services.items():
        base = ("services", name)
        for k in svc:
            if k not in SERVICE_KEYS and not _is_ext(k):
                bad.append(((*base, k), f"services.{name}.{k}"))
        nets = svc.get("networks") or {}
        if len(nets) > 1:
            bad.append(((*base, "networks"), f"services.{name}.networks (more than one network)"))
        for n, cfg in nets.items():
            for k in (cfg or {}):
                if k not in SERVICE_NETWORK_KEYS:
                    bad.append(((*base, "networks", n, k), f"services.{name}.networks.{n}.{k}"))
        for i, v in enumerate(svc.get("volumes") or []):
            if isinstance(v, dict):
                if v.get("type") not in ("volume", "bind", "tmpfs"):
                    bad.append(((*base, "volumes", i),
                                f"services.{name}.volumes[{i}].type {v.get('type')}"))
                for k in v:
                    if k not in LONG_VOLUME_KEYS and not _is_ext(k):
                        bad.append(((*base, "volumes", i, k), f"services.{name}.volumes[{i}].{k}"))
                for sub, allowed in (("volume", {"nocopy"}), ("bind", {"create_host_path"}),
                                     ("tmpfs", {"size", "mode"})):
                    for k in (v.get(sub) or {}):
                        if k not in allowed:
                            bad.append(((*base, "volumes", i, sub, k),
                                        f"services.{name}.volumes[{i}].{sub}.{k}"))
        for i, p in enumerate(svc.get("ports") or []):
            if isinstance(p, dict):
                for k in p:
                    if k not in LONG_PORT_KEYS and not _is_ext(k):
                        bad.append(((*base, "ports", i, k), f"services.{name}.ports[{i}].{k}"))
                if p.get("mode", "ingress") not in ("ingress", "host"):
                    bad.append(((*base, "ports", i, "mode"), f"services.{name}.ports[{i}].mode"))
        if svc.get("pull_policy") not in (None, "always", "missing", "if_not_present", "never"):
            bad.append(((*base, "pull_policy"), f"services.{name}.pull_policy "
                        f"{svc['pull_policy']}"))
    for section, keys in (("volumes", VOLUME_KEYS), ("networks", NETWORK_KEYS)):
        for name, cfg in (getattr(project, section) or {}).items():
            for k, v in (cfg or {}).items():
                if k == "driver" and v in ("local", "bridge"):
                    continue
                if k not in keys or k == "driver":
                    bad.append(((section, name, k), f"{section}.{name}.{k}"))


def _references(project: Project) -> None:
    for name, svc in project.services.items():
        base = ("services", name)
        if not svc.get("image"):
            raise BadInput(f"{project.where(base)}: services.{name}: no image "
                           "(volmerge compose runs images; build is not supported)")
        for dep, cfg in (svc.get("depends_on") or {}).items():
            if dep not in project.services:
                if (cfg or {}).get("required", True) is False:
                    continue
                raise BadInput(f"{project.where((*base, 'depends_on', dep))}: services.{name}."
                               f"depends_on: service {dep!r} is not defined or not enabled "
                               "by the active profiles")
            cond = (cfg or {}).get("condition", "service_started")
            if cond not in CONDITIONS:
                raise BadInput(f"{project.where((*base, 'depends_on', dep))}: services.{name}."
                               f"depends_on.{dep}.condition: {cond!r} is not one of "
                               f"{', '.join(CONDITIONS)}")
        for n in svc.get("networks") or {}:
            if n != "default" and n not in project.networks:
                raise BadInput(f"{project.where((*base, 'networks', n))}: services.{name}."
                               f"networks: network {n!r} is not defined in the top-level networks")
        from .convert import named_volumes

        for vol in named_volumes(svc):
            if vol not in project.volumes:
                raise BadInput(f"{project.where((*base, 'volumes'))}: services.{name}.volumes: "
                               f"volume {vol!r} is not defined in the top-level volumes")
    order(project.services)  # a dependency cycle is bad input too


def order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Service names, each after every service it depends on (stable)."""
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise BadInput(f"dependency cycle: {' -> '.join((*stack, n))}")
        state[n] = 1
        for dep in services[n].get("depends_on") or {}:
            if dep in services:
                visit(dep, (*stack, n))
        state[n] = 2
        out.append(n)

    for n in services:
        visit(n, ())
    return out
