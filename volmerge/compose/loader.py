"""A compose project loaded as docker compose loads it.

Files: ``-f`` in order, else ``COMPOSE_FILE``, else the first of
``compose.yaml``, ``compose.yml``, ``docker-compose.yaml``,
``docker-compose.yml`` in the working directory or the nearest parent, with
its ``compose.override.yaml`` (or ``.yml`` / ``docker-compose.override.*``)
after it.  Each file is read (yamlsrc), interpolated (interpolate), checked
against the specification's schema (schema), its relative paths made
absolute and its ``extends`` resolved; then the files are merged (merge),
``include`` copies other projects in, profiles pick the services, and the
result is checked for what volmerge cannot run (model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from volmerge.errors import BadInput

from . import envfile
from .interpolate import interpolate_tree
from .merge import merge, normalize_file, normalize_service, strip_markers
from .yamlsrc import Positions, load_file

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml",
                  "docker-compose.override.yaml", "docker-compose.override.yml")
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Options:
    """What the command line said about the project."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()   # services named on the command line: their profiles are on
    cwd: str | None = None


@dataclass
class Project:
    """The merged, checked model: plain data as ``config`` prints it."""

    name: str
    directory: str
    files: list[str]
    services: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    environment: dict[str, str]
    positions: list[Positions] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def where(self, path: tuple[Any, ...]) -> str:
        """The last file that wrote ``path`` (file:line), for an error."""
        for pos in reversed(self.positions):
            if tuple(path) in pos.lines:
                return pos.where(path)
        for pos in reversed(self.positions):
            if pos.line(path):
                return pos.where(path)
        return self.files[0] if self.files else "compose file"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "services": self.services}
        if self.networks:
            out["networks"] = self.networks
        if self.volumes:
            out["volumes"] = self.volumes
        return out


def find_files(cwd: str, environ: dict[str, str]) -> list[str]:
    """The files docker compose would use when no ``-f`` is given."""
    if environ.get("COMPOSE_FILE"):
        sep = environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [os.path.join(cwd, f) for f in environ["COMPOSE_FILE"].split(sep) if f]
    d = os.path.abspath(cwd)
    while True:
        for name in DEFAULT_FILES:
            if os.path.isfile(os.path.join(d, name)):
                out = [os.path.join(d, name)]
                for o in OVERRIDE_FILES:
                    if os.path.isfile(os.path.join(d, o)):
                        out.append(os.path.join(d, o))
                        break
                return out
        parent = os.path.dirname(d)
        if parent == d:
            raise BadInput(f"no compose file found in {cwd} or its parents "
                           f"(looked for {', '.join(DEFAULT_FILES)})")
        d = parent


def load(opts: Options, environ: dict[str, str] | None = None) -> Project:
    """The project the options and the environment name, checked."""
    from .model import check

    environ = dict(os.environ if environ is None else environ)
    cwd = os.path.abspath(opts.cwd or os.getcwd())
    cwd_env = _dotenv(os.path.join(cwd, ".env"), environ) if not opts.env_files else {}
    files = [os.path.join(cwd, f) for f in opts.files] or find_files(cwd, {**cwd_env, **environ})
    directory = os.path.dirname(os.path.abspath(files[0]))
    if opts.env_files:
        dotenv: dict[str, str] = {}
        for f in opts.env_files:
            dotenv.update(envfile.read(os.path.join(cwd, f), {**dotenv, **environ}))
    else:
        dotenv = _dotenv(os.path.join(directory, ".env"), environ)
    env = {**dotenv, **environ}
    warnings: list[str] = []
    data, positions = _load_model(files, directory, env, warnings, seen=())
    name = _project_name(opts.project_name or env.get("COMPOSE_PROJECT_NAME")
                         or data.get("name") or os.path.basename(directory))
    profiles = set(opts.profiles) or {p for p in env.get("COMPOSE_PROFILES", "").split(",") if p}
    project = Project(name=name, directory=directory, files=files,
                      services=data.get("services") or {}, volumes=data.get("volumes") or {},
                      networks=data.get("networks") or {}, environment=env,
                      positions=positions, warnings=warnings)
    _apply_profiles(project, profiles, opts.targets)
    check(project)
    return project


def _dotenv(path: str, environ: dict[str, str]) -> dict[str, str]:
    return envfile.read(path, environ) if os.path.isfile(path) else {}


def _project_name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9_-]", "", raw.lower())
    if not _PROJECT_RE.fullmatch(name):
        raise BadInput(f"invalid project name {raw!r}: use lowercase letters, digits, '_' "
                       "and '-', starting with a letter or digit")
    return name


def _load_model(files: list[str], directory: str, env: dict[str, str], warnings: list[str],
                seen: tuple[str, ...]) -> tuple[dict[str, Any], list[Positions]]:
    """Several files read, merged, their ``include`` applied."""
    merged: dict[str, Any] = {}
    positions: list[Positions] = []
    for f in files:
        data, pos = read_file(f, directory, env, warnings)
        positions.append(pos)
        data = _resolve_extends(data, pos, f, env, warnings, (os.path.abspath(f),))
        merged = merge(merged, data) if merged else strip_markers(data)
    includes = merged.pop("include", None) or []
    for i, item in enumerate(includes):
        _include(merged, item, directory, env, warnings, seen + tuple(map(os.path.abspath, files)),
                 positions, (i,))
    return merged, positions


def read_file(path: str, directory: str, env: dict[str, str],
              warnings: list[str]) -> tuple[dict[str, Any], Positions]:
    """One file: read, interpolated, validated, normalized, paths absolute."""
    from .schema import validate

    data, pos = load_file(path)
    data = interpolate_tree(data, env, pos.where, warnings.append)
    validate(strip_markers(data), pos)
    data = normalize_file(data)
    return _absolute_paths(data, directory), pos


def _absolute_paths(data: dict[str, Any], directory: str) -> dict[str, Any]:
    """Bind sources, ``env_file`` and ``extends.file`` relative to ``directory``."""
    def absolute(p: str) -> str:
        p = os.path.expanduser(p)
        return os.path.normpath(os.path.join(directory, p))

    for svc in (data.get("services") or {}).values():
        if not isinstance(svc, dict):
            continue
        ef = svc.get("env_file")
        if isinstance(ef, str):
            svc["env_file"] = [absolute(ef)]
        elif isinstance(ef, list):
            svc["env_file"] = [absolute(e) if isinstance(e, str) else
                               {**e, "path": absolute(e["path"])} for e in ef]
        vols = svc.get("volumes")
        if isinstance(vols, list):
            svc["volumes"] = [_absolute_volume(v, absolute) for v in vols]
        ext = svc.get("extends")
        if isinstance(ext, dict) and ext.get("file"):
            svc["extends"] = {**ext, "file": absolute(ext["file"])}
    return data


def _absolute_volume(v: Any, absolute: Any) -> Any:
    if isinstance(v, str):
        parts = v.split(":")
        if len(parts) >= 2 and parts[0][:1] in (".", "~", "/"):
            return ":".join([absolute(parts[0]), *parts[1:]])
        return v
    if isinstance(v, dict) and v.get("type") == "bind" and isinstance(v.get("source"), str):
        return {**v, "source": absolute(v["source"])}
    return v


def _resolve_extends(data: dict[str, Any], pos: Positions, path: str, env: dict[str, str],
                     warnings: list[str], chain: tuple[str, ...]) -> dict[str, Any]:
    services = data.get("services")
    if not isinstance(services, dict):
        return data
    done: dict[str, dict[str, Any]] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> dict[str, Any]:
        if name in done:
            return done[name]
        svc = services[name]
        ext = svc.get("extends") if isinstance(svc, dict) else None
        if ext is None:
            done[name] = svc
            return svc
        if isinstance(ext, str):
            ext = {"service": ext}
        base_name = ext["service"]
        where = pos.where(("services", name, "extends"))
        if ext.get("file") and os.path.abspath(ext["file"]) != os.path.abspath(path):
            other = os.path.abspath(ext["file"])
            if other in chain:
                raise BadInput(f"{where}: services.{name}.extends: circular reference to {other}")
            odata, opos = read_file(other, os.path.dirname(other), env, warnings)
            odata = _resolve_extends(odata, opos, other, env, warnings, (*chain, other))
            base = (odata.get("services") or {}).get(base_name)
            if base is None:
                raise BadInput(f"{where}: services.{name}.extends: no service {base_name!r} "
                               f"in {other}")
        else:
            if base_name not in services:
                raise BadInput(f"{where}: services.{name}.extends: no service {base_name!r}")
            if base_name in stack:
                raise BadInput(f"{where}: services.{name}.extends: circular reference "
                               f"{' -> '.join((*stack, base_name))}")
            base = resolve(base_name, (*stack, base_name))
        own = {k: v for k, v in svc.items() if k != "extends"}
        base = {k: v for k, v in normalize_service(base).items() if k != "extends"}
        out = merge(base, own, ("services", name))
        done[name] = out
        return out

    return {**data, "services": {n: resolve(n, (n,)) for n in services}}


def _include(merged: dict[str, Any], item: Any, directory: str, env: dict[str, str],
             warnings: list[str], seen: tuple[str, ...], positions: list[Positions],
             at: tuple[int, ...]) -> None:
    if isinstance(item, str):
        item = {"path": item}
    paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
    paths = [os.path.normpath(os.path.join(directory, p)) for p in paths]
    for p in paths:
        if p in seen:
            raise BadInput(f"include: {p} includes itself (circular include)")
    sub_dir = os.path.normpath(os.path.join(directory, item.get("project_directory")
                                            or os.path.dirname(paths[0])))
    env_files = item.get("env_file") or []
    env_files = [env_files] if isinstance(env_files, str) else env_files
    sub_env: dict[str, str] = {}
    for f in env_files or [os.path.join(sub_dir, ".env")]:
        f = os.path.join(directory, f)
        if env_files or os.path.isfile(f):
            sub_env.update(envfile.read(f, {**sub_env, **env}))
    data, pos = _load_model(paths, sub_dir, {**sub_env, **env}, warnings, seen)
    positions.extend(pos)
    for section in ("services", "volumes", "networks"):
        for k, v in (data.get(section) or {}).items():
            target = merged.setdefault(section, {})
            if k in target and target[k] != v:
                raise BadInput(f"include {paths[0]}: {section[:-1]} {k!r} is defined "
                               "by the project and by the included file")
            target[k] = v


def _apply_profiles(project: Project, active: set[str], targets: tuple[str, ...]) -> None:
    """Drop services none of whose profiles is active (a service named on the
    command line turns its own profiles on, 15-profiles.md)."""
    active = set(active)
    for t in targets:
        if t not in project.services:
            raise BadInput(f"no such service: {t}")
        active.update(project.services[t].get("profiles") or [])

    def enabled(svc: dict[str, Any]) -> bool:
        profiles = svc.get("profiles") or []
        return not profiles or "*" in active or bool(active & set(profiles))

    project.services = {n: s for n, s in project.services.items() if enabled(s)}
