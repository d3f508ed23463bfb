"""Merging compose files: the Compose Specification's rules (13-merge.md).

Mappings merge key by key, the later file winning on a conflict; sequences
are appended; ``command``, ``entrypoint`` and ``healthcheck.test`` are
replaced; ``volumes`` are unique by target and ``ports`` by
``{ip, target, published, protocol}`` (a later entry with the same key
replaces the earlier one in place); ``!reset`` removes a value and
``!override`` replaces it whole.  Keys that are lists *or* mappings
(``environment``, ``labels``, ``extra_hosts``, ``depends_on``, a service's
``networks``) are normalized to mappings first, so ``- FOO=1`` in one file
and ``FOO: 2`` in the next merge as the same key.  ``extends`` uses the same
merge (the extending service is the later file).
"""

from __future__ import annotations

from typing import Any

from .yamlsrc import Override, Reset

_REPLACED = {"command", "entrypoint"}


def normalize_service(svc: dict[str, Any]) -> dict[str, Any]:
    """The list-or-mapping keys of one service as mappings (the rest untouched)."""
    out = dict(svc)
    for key in ("environment", "labels"):
        if isinstance(out.get(key), list):
            out[key] = _kv_list(out[key], "=")
    if isinstance(out.get("extra_hosts"), list):
        out["extra_hosts"] = _hosts_list(out["extra_hosts"])
    if isinstance(out.get("depends_on"), list):
        out["depends_on"] = {n: {"condition": "service_started", "required": True}
                             for n in out["depends_on"]}
    if isinstance(out.get("networks"), list):
        out["networks"] = {n: None for n in out["networks"]}
    return out


def _kv_list(items: list[Any], sep: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, str):
            k, s, v = item.partition(sep)
            out[k] = v if s else None
        else:
            out[str(item)] = None
    return out


def _hosts_list(items: list[Any]) -> dict[str, Any]:
    """``host:ip`` or ``host=ip`` (an IPv6 address keeps its colons); a host
    named twice keeps both addresses, as the mapping syntax's list does."""
    out: dict[str, Any] = {}
    for item in items:
        s = str(item)
        if "=" in s:
            k, _, v = s.partition("=")
        else:
            k, _, v = s.partition(":")
        if k in out:
            prev = out[k]
            out[k] = [*(prev if isinstance(prev, list) else [prev]), v]
        else:
            out[k] = v
    return out


def normalize_file(data: dict[str, Any]) -> dict[str, Any]:
    """Every service of one file normalized (before merging it)."""
    services = data.get("services")
    if not isinstance(services, dict):
        return data
    out = dict(data)
    out["services"] = {n: normalize_service(s) if isinstance(s, dict) else s
                       for n, s in services.items()}
    return out


def merge(base: Any, over: Any, path: tuple[str, ...] = ()) -> Any:
    """``over`` (a later file) merged onto ``base`` by the rules above."""
    if isinstance(over, Override):
        return strip_markers(over.value)
    if isinstance(over, Reset):
        return None
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if isinstance(v, Reset):
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, (*path, k))
            else:
                out[k] = strip_markers(v)
        return out
    if isinstance(base, list) and isinstance(over, list):
        return _merge_list(base, strip_markers(over), path)
    return strip_markers(over)


def _merge_list(base: list[Any], over: list[Any], path: tuple[str, ...]) -> list[Any]:
    in_service = len(path) == 3 and path[0] == "services"
    key = path[-1] if path else ""
    if in_service and key in _REPLACED:
        return over
    if len(path) == 4 and path[0] == "services" and path[2:] == ("healthcheck", "test"):
        return over
    if in_service and key in ("volumes", "ports"):
        ident = volume_target if key == "volumes" else port_key
        out = list(base)
        index = {ident(x): i for i, x in enumerate(out)}
        for item in over:
            k = ident(item)
            if k is not None and k in index:
                out[index[k]] = item
            else:
                index[k] = len(out)
                out.append(item)
        return out
    return base + over


def volume_target(item: Any) -> str | None:
    """The container path of a short (``src:target[:mode]``) or long volume."""
    if isinstance(item, dict):
        t = item.get("target")
        return str(t) if t is not None else None
    parts = str(item).split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def port_key(item: Any) -> tuple[str, str, str, str] | None:
    if isinstance(item, dict):
        return (str(item.get("host_ip") or ""), str(item.get("target")),
                str(item.get("published") or ""), str(item.get("protocol") or "tcp"))
    body, _, proto = str(item).partition("/")
    ip, host, target = "", "", body
    if body.count(":") >= 2:
        ip, _, rest = body.rpartition(":")
        ip, _, host = ip.rpartition(":")
        target = rest
    elif ":" in body:
        host, _, target = body.partition(":")
    return (ip.strip("[]"), target, host, proto or "tcp")


def strip_markers(v: Any) -> Any:
    """A value with every ``!reset`` dropped and ``!override`` unwrapped (what
    the first file of a merge, or a file merged onto nothing, means)."""
    if isinstance(v, Override):
        return strip_markers(v.value)
    if isinstance(v, dict):
        return {k: strip_markers(x) for k, x in v.items() if not isinstance(x, Reset)}
    if isinstance(v, list):
        return [strip_markers(x) for x in v if not isinstance(x, Reset)]
    return v
