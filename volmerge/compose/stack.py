"""A compose project's containers, networks and volumes, through the same
Python APIs ``volmerge run`` uses (volmerge.context: one engine with the
layered volumes and the network manager).

``up`` works in dependency order and waits for each ``depends_on``
condition before it starts a dependent service.  It is idempotent: a
container whose ``com.docker.compose.config-hash`` label matches the file
and whose image is still what its reference names is left alone (started
if stopped); any other is stopped (its ``stop_signal``, then SIGKILL after
``stop_grace_period``), removed and created again.  Volumes are named, so a
recreated container finds its data.  The containers of a project are found
by their ``com.docker.compose.project`` label, as docker compose finds them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from volmerge.errors import BadInput, NotDone
from volmerge.parked import is_parked
from volmerge.runtime.errors import BadInput as RuntimeBadInput

from . import convert
from .convert import L_HASH, L_ONEOFF, L_PROJECT, L_SERVICE
from .loader import Project
from .model import order

HEALTH_TIMEOUT = 300.0


def _to_stderr(msg: str) -> None:
    """The default ``say``: one line of progress on stderr."""
    sys.stderr.write(msg + "\n")


@dataclass(frozen=True)
class Action:
    """What ``up`` did to one service: created, recreated, started, running."""

    service: str
    container: str
    what: str


class Stack:
    def __init__(self, store: Any, project: Project,
                 say: Callable[[str], None] | None = None) -> None:
        from volmerge.context import Context

        self.project = project
        self.ctx = Context(store)
        self.engine = self.ctx.engine
        self.say: Callable[[str], None] = say or _to_stderr

    # -- queries -------------------------------------------------------------------
    def containers(self, *, oneoff: bool = False, generations: bool = False) -> list[Any]:
        """The project's containers (every state), in service order; with
        ``generations``, also the earlier generations an upgrade kept
        (``NAME.genN``)."""
        rank = {n: i for i, n in enumerate(order(self.project.services))}
        out = [c for c in self.engine.list(all=True)
               if c.options.labels.get(L_PROJECT) == self.project.name
               and (oneoff or c.options.labels.get(L_ONEOFF) != "True")
               and (generations or not is_parked(c.name))]
        return sorted(out, key=lambda c: (rank.get(c.options.labels.get(L_SERVICE, ""), 1 << 30),
                                          c.name))

    def container_of(self, service: str) -> Any | None:
        for c in self.containers():
            if c.options.labels.get(L_SERVICE) == service:
                return c
        return None

    def _known(self, services: Iterable[str]) -> None:
        """BadInput naming the first of ``services`` the project does not define."""
        for s in services:
            if s not in self.project.services:
                raise BadInput(f"no such service: {s}")

    def with_dependencies(self, services: Iterable[str]) -> list[str]:
        """The named services (all when none) and what they depend on, in order."""
        wanted = list(services) or list(self.project.services)
        self._known(wanted)
        need: set[str] = set()

        def add(n: str) -> None:
            if n not in need:
                need.add(n)
                for d in self.project.services[n].get("depends_on") or {}:
                    if d in self.project.services:
                        add(d)

        for s in wanted:
            add(s)
        return [n for n in order(self.project.services) if n in need]

    # -- up ------------------------------------------------------------------------------
    def up(self, services: Iterable[str] = ()) -> list[Action]:
        names = self.with_dependencies(services)
        plans = {n: convert.run_options(self.project, n) for n in names}  # bad input first
        self._check_external(names)
        for n in names:
            self._ensure_image(n)
        self._ensure_networks(names)
        actions = []
        for n in names:
            self._wait_dependencies(n)
            actions.append(self._up_one(n, plans[n]))
        return actions

    def _up_one(self, name: str, opts: Any) -> Action:
        c = self.container_of(name)
        if c is not None and self._current(c, opts):
            if c.live:
                return Action(name, c.name, "running")
            self.engine.start(c.id)
            self.say(f"Container {c.name}  Started")
            return Action(name, c.name, "started")
        what = "created"
        if c is not None:
            self._remove(c, name)
            what = "recreated"
        for m in opts.mounts:  # as docker compose: a missing bind source is made
            if m.kind == "bind" and not os.path.exists(m.source):
                os.makedirs(m.source, exist_ok=True)
        new = self.engine.create(opts)
        try:
            self.engine.start(new.id)
        except RuntimeBadInput:
            self.engine.remove(new.id, force=True)
            raise
        self.say(f"Container {new.name}  {what.capitalize()}, started")
        return Action(name, new.name, what)

    def _current(self, c: Any, opts: Any) -> bool:
        if (c.options.labels.get(L_HASH) != opts.labels[L_HASH] or c.name != opts.name
                or c.image_ref != opts.image):
            return False
        try:
            return bool(self.ctx.images.get(opts.image).id == c.image_id)
        except RuntimeBadInput:
            return True  # the reference names no image now: keep what runs

    def _remove(self, c: Any, service: str) -> None:
        svc = self.project.services.get(service) or {}
        timeout = convert.stop_timeout(svc, service) if svc else 10.0
        if c.live:
            self.engine.stop(c.id, timeout)
        self.engine.remove(c.id, force=True)

    def _wait_dependencies(self, name: str) -> None:
        for dep, cfg in (self.project.services[name].get("depends_on") or {}).items():
            if dep not in self.project.services:
                continue
            cond = (cfg or {}).get("condition", "service_started")
            c = self.container_of(dep)
            if c is None:
                raise NotDone(f"service {name} depends on {dep}, which has no container")
            if cond == "service_healthy":
                self.say(f"Container {c.name}  Waiting (healthy)")
                self.engine.wait(c.id, healthy=True, timeout=HEALTH_TIMEOUT)
            elif cond == "service_completed_successfully":
                code = self.engine.wait(c.id, timeout=HEALTH_TIMEOUT)
                if code != 0:
                    raise NotDone(f"service {name} depends on {dep} completing successfully; "
                                  f"it exited with {code}")
            elif not self.engine.get(c.id).live and self.engine.get(c.id).exit_code is None:
                raise NotDone(f"service {name} depends on {dep}, which is not running")

    def _check_external(self, names: list[str]) -> None:
        nets = convert.network_names(self.project)
        for key, (real, external) in nets.items():
            if external:
                if not self._network_exists(real):
                    raise BadInput(f"external network {real!r} (networks.{key}) does not "
                                   "exist: create it first")
        for key, cfg in self.project.volumes.items():
            if (cfg or {}).get("external"):
                real = convert.volume_name(self.project, key)
                if not self.ctx.volumes.exists(real):
                    raise BadInput(f"external volume {real!r} (volumes.{key}) does not exist: "
                                   "create it first")

    def _ensure_networks(self, names: list[str]) -> None:
        wanted = {convert.service_networks(self.project.services[n])[0] for n in names}
        for key, (real, external) in convert.network_names(self.project).items():
            if key in wanted and not external and not self._network_exists(real):
                self.ctx.network.create(real)
                self.say(f"Network {real}  Created")

    def _network_exists(self, name: str) -> bool:
        return any(n.name == name for n in self.ctx.network.list())

    def _ensure_image(self, name: str) -> None:
        svc = self.project.services[name]
        ref = str(svc["image"])
        policy = svc.get("pull_policy") or "missing"
        if policy != "always":
            try:
                self.ctx.images.get(ref)
                return
            except RuntimeBadInput:
                pass
            if policy == "never":
                raise BadInput(f"service {name}: image {ref} is not in the store "
                               "(pull_policy: never)")
        self.pull_one(ref)

    def pull_one(self, ref: str) -> Any:
        from volmerge.runtime.registry.pull import pull

        self.say(f"Image {ref}  Pulling")
        got = pull(self.ctx.images, ref)
        self.say(f"Image {ref}  Pulled ({got.image.short_id})")
        return got

    def pull(self, services: Iterable[str] = ()) -> None:
        for n in self.with_dependencies(services):
            self.pull_one(str(self.project.services[n]["image"]))

    # -- down ----------------------------------------------------------------------------
    def down(self, *, volumes: bool = False) -> None:
        """Every container of the project (reverse order), its networks and,
        with ``volumes``, its named and anonymous volumes (external ones stay)."""
        for c in reversed(self.containers(oneoff=True, generations=True)):
            self._remove(c, c.options.labels.get(L_SERVICE, ""))
            self.say(f"Container {c.name}  Removed")
        for _key, (real, external) in convert.network_names(self.project).items():
            if not external and self._network_exists(real):
                self.ctx.network.remove(real)
                self.say(f"Network {real}  Removed")
        if volumes:
            for name in self._volume_names():
                if self.ctx.volumes.exists(name):
                    self.ctx.volumes.remove(name)
                    self.say(f"Volume {name}  Removed")

    def _volume_names(self) -> list[str]:
        out = [convert.volume_name(self.project, k) for k, cfg in self.project.volumes.items()
               if not (cfg or {}).get("external")]
        for n, svc in self.project.services.items():
            for v in svc.get("volumes") or []:
                kind, source, target, _ro, _x = convert._volume(v)
                if kind == "volume" and not source:
                    out.append(convert.anonymous_volume(self.project, n, target))
        return out

    # -- run, exec, logs -------------------------------------------------------------------
    def run(self, service: str, command: list[str] | None, *, rm: bool) -> int:
        deps = [d for d in self.with_dependencies([service]) if d != service]
        if deps:
            self.up(deps)
            self._wait_dependencies(service)
        opts = convert.run_options(self.project, service, oneoff=True, command=command)
        opts.rm = rm
        self._ensure_image(service)
        self._ensure_networks([service])
        return int(self.engine.run(opts))

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None) -> int:
        self._known([service])
        c = self.container_of(service)
        if c is None or not c.live:
            raise BadInput(f"service {service!r} is not running")
        return int(self.engine.exec(c.id, argv, env=env, user=user, workdir=workdir))

    def logs(self, services: Iterable[str] = (), *, follow: bool = False,
             tail: int | None = None, out: Any = None) -> None:
        """Each container's lines prefixed ``NAME  | `` (several containers
        followed at once, each by a thread of its own)."""
        import queue
        import threading

        out = out or sys.stdout
        wanted = set(services)
        self._known(wanted)
        cs = [c for c in self.containers()
              if not wanted or c.options.labels.get(L_SERVICE) in wanted]
        width = max((len(c.name) for c in cs), default=0)
        q: queue.Queue[tuple[str, str] | None] = queue.Queue()

        def pump(c: Any) -> None:
            try:
                for _stream, text, _ts in self.engine.logs(c.id, follow=follow, tail=tail):
                    q.put((c.name, text))
            except Exception as exc:  # noqa: BLE001 - one container's log, said, not a traceback
                q.put((c.name, f"(no logs: {exc})"))
            finally:
                q.put(None)

        threads = [threading.Thread(target=pump, args=(c,), daemon=True) for c in cs]
        for t in threads:
            t.start()
        left = len(threads)
        while left:
            item = q.get()
            if item is None:
                left -= 1
                continue
            name, text = item
            out.write(f"{name:<{width}}  | {text}{'' if text.endswith(chr(10)) else chr(10)}")
            out.flush()
