"""The container engine: the one object the CLI and volmerge use.

A container is a row in the ``containers`` table (component "containers")
plus ``<root>/containers/<id>/``::

    upper/ work/        the container layer (survives stop/start; rm removes it)
    bundle/config.json  the OCI runtime spec, rewritten at every start
    bundle/rootfs       the overlay mount point (mounted while it runs)
    init.pid            host pid of the container's first process
    log                 json-lines output of a detached container
    hosts               /etc/hosts when no network manager provides one
    hostname            /etc/hostname
    resolv.conf         /etc/resolv.conf (the host's, loopback resolvers dropped)

A detached container is owned by a supervisor process (runtime.supervisor);
a foreground one by the CLI process that runs it.  Either way the owner's pid
and start time are recorded, so any later command can tell a live owner from
a dead one and reconcile (``ps`` always tells the truth).

:class:`Engine` is a facade over the parts, each of which owns one job:
``records`` (the table and its typed rows), ``bundle`` (a run made and
unmade), ``lifecycle`` (start, stop, kill, ...), ``supervisor`` (the owner
of a run and both ends of its start notification), ``logfile`` (both ends
of the log format) and ``reconcile`` (a dead owner's run undone); the last
two are imported only when needed.
"""

from __future__ import annotations

import builtins  # annotations: the class's list() method shadows the type
import os
import time
from collections.abc import Iterator

from . import rootfs as rootfs_mod
from .bundle import Bundles, netns_of
from .errors import BadInput, NotFound
from .lifecycle import Lifecycle
from .options import RunOptions, check_name, check_socket_activate
from .records import Container, ContainerRecords, image_users

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

class Engine:
    """Containers on overlay layers, run by an executor (runc or builtin).

    ``volumes``: a runtime.volumes_api.VolumeProvider (default: plain dirs);
    ``network``: a NetworkManager or None; ``runtime``: the default executor
    for new containers ("runc" | "builtin" | None = runc when installed);
    ``factory``: "module:function" building from a store what a supervisor
    uses of this engine, an object with its ``records`` and ``bundles``
    (runtime.supervisor.parts), so that supervisors use the same volume and
    network providers.

    ``records`` and ``bundles`` are what a supervisor is handed.
    """

    def __init__(self, store: Any, volumes: Any = None, network: Any = None,
                 runtime: str | None = None, *, factory: str | None = None) -> None:
        self.store = store
        if volumes is None:
            from .volumes_api import PlainDirVolumes

            volumes = PlainDirVolumes(store.root)
        self.default_runtime = runtime
        self.factory = factory
        self.records = ContainerRecords(store)
        self.bundles = Bundles(store, self.records, volumes, network)
        self.lifecycle = Lifecycle(self.records, self.bundles, factory)
        register_image_check()

    @property
    def volumes(self) -> Any:
        """The volume provider (one, shared with the bundles)."""
        return self.bundles.volumes

    @property
    def network(self) -> Any:
        """The network manager or None (one, shared with the bundles)."""
        return self.bundles.network

    # -- queries ------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        """The container by name, id or unique id prefix, reconciled."""
        return self.lifecycle.get(ref)

    def list(self, all: bool = False) -> list[Container]:
        out = [self.lifecycle.reconciled(c) for c in self.records.all()]
        return out if all else [c for c in out if c.live]

    def users_of_image(self, image_id: str) -> builtins.list[str]:
        return self.records.users_of_image(image_id)

    def netns_of(self, c: Container) -> str | None:
        """Where the container's network namespace is seen from the host."""
        return netns_of(c)

    def health(self, ref: str) -> Any:
        from .health import HealthStatus

        c = self.get(ref)
        d = c.health_detail or {}
        return HealthStatus(c.health, int(d.get("failing_streak", 0)), list(d.get("log", [])))

    def logs(self, ref: str, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[tuple[str, str, float]]:
        """(stream, text, unix time) of a detached container's output, a line
        each (a very long line in pieces): with ``since``, only what was
        written from then on; with ``tail``, only the last ``tail`` of what is
        there now; with ``follow``, then what comes until the container exits."""
        from . import logfile

        c = self.get(ref)

        def finished() -> bool:
            try:
                cur = self.records.lookup(c.id)
            except NotFound:  # removed while followed: nothing more will come
                return True
            return not cur.live and not cur.owner_alive()

        return logfile.read(c.log_path, follow=follow, tail=tail, since=since,
                            finished=finished)

    # -- create, rename -------------------------------------------------------------
    def create(self, opts: RunOptions) -> Container:
        """Record a new container (nothing runs yet).  Name clash: Conflict."""
        from . import executors

        runtime = opts.runtime or self.default_runtime or executors.default_name()
        if runtime not in executors.NAMES:
            raise BadInput(f"unknown runtime {runtime!r}: expected one of {', '.join(executors.NAMES)}")
        if opts.rm and opts.restart.name != "no":
            raise BadInput("--rm and --restart cannot be combined")
        if opts.ports and (self.network is None or opts.network in ("none", "host")):
            raise BadInput("publishing ports needs a container network (--network NAME)")
        if opts.socket_activate:
            check_socket_activate(opts)
        if opts.network not in (None, "none", "host") and self.network is None:
            raise BadInput(f"network {opts.network!r}: no network manager is configured")
        seen: set[str] = set()
        for m in opts.mounts:
            t = m.target.rstrip("/")
            if t in seen:
                raise BadInput(f"duplicate mount point {m.target}")
            seen.add(t)
        image = rootfs_mod.load_image(self.store, opts.image)
        # no name: records.insert picks a free one inside its transaction, so two
        # creates at once never pick the same
        return self.records.insert(
            cid=os.urandom(32).hex(), name=check_name(opts.name) if opts.name else None,
            image_id=str(image.id), image_ref=opts.image, runtime=runtime, options=opts,
            image_config=image.config or {}, lowers=[str(x) for x in image.lower_dirs()],
            created=time.time())

    def rename(self, ref: str, new_name: str) -> Container:
        """Give a container another name (the upgrade keeps an old generation
        as ``NAME.genN``).  Conflict when the name is taken."""
        check_name(new_name)
        return self.records.rename(self.records.lookup(ref).id, new_name)

    # -- a run, made and unmade (runtime.bundle) --------------------------------------
    def executor_for(self, c: Container) -> Any:
        return self.bundles.executor_for(c)

    def prepare(self, c: Container) -> None:
        """Mount the root, attach volumes and network, write config.json.
        On any failure everything done here is undone."""
        self.bundles.prepare(c)

    def prestart(self, ref: str, ip: str | None = None) -> Container:
        """Prepare a created container's start ahead of it, what does not
        depend on its volumes' data or on its address being free (see
        Lifecycle.prestart)."""
        return self.lifecycle.prestart(ref, ip)

    def unprestart(self, ref: str) -> None:
        """Undo prestart of a container not started since (idempotent)."""
        self.lifecycle.unprestart(ref)

    def teardown(self, c: Container) -> None:
        """Undo prepare: runtime state, cgroups, mounts, volumes, network."""
        self.bundles.teardown(c)

    # -- lifecycle (runtime.lifecycle) -----------------------------------------------
    def run(self, opts: RunOptions) -> int:
        """``volmerge run`` in the foreground: the exit code of the container."""
        c = self.create(opts)
        try:
            if opts.detach:
                self.start(c.id)
                return 0
            return int(self.start(c.id, attach=True) or 0)
        except BadInput:
            self.remove(c.id, force=True)
            raise
        finally:
            if opts.rm and not opts.detach:
                try:
                    self.remove(c.id, force=True)
                except NotFound:
                    pass

    def start(self, ref: str, *, attach: bool = False, stop_timeout: float = 10) -> int | None:
        """Start a created or exited container (see Lifecycle.start)."""
        return self.lifecycle.start(ref, attach=attach, stop_timeout=stop_timeout)

    def stop(self, ref: str, timeout: float = 10, *, autoremove: bool = False) -> Container:
        """The image's StopSignal (default SIGTERM), then SIGKILL after
        ``timeout`` seconds; the restart policy does not restart a container
        stopped this way.  ``autoremove``: a ``--rm`` container is removed
        once stopped (the ``stop`` command; see Lifecycle.stop)."""
        return self.lifecycle.stop(ref, timeout, autoremove=autoremove)

    def kill(self, ref: str, sig: str | int = "TERM") -> Container:
        return self.lifecycle.kill(ref, sig)

    def restart(self, ref: str, timeout: float = 10) -> Container:
        """Stop and start detached (see Lifecycle.restart)."""
        return self.lifecycle.restart(ref, timeout)

    def remove(self, ref: str, force: bool = False) -> None:
        """Remove a stopped container (``force``: kill it first) and its layer."""
        self.lifecycle.remove(ref, force)

    def pause(self, ref: str) -> None:
        self.lifecycle.pause(ref)

    def unpause(self, ref: str, *, missing_ok: bool = False) -> None:
        self.lifecycle.unpause(ref, missing_ok=missing_ok)

    def exec(self, ref: str, argv: builtins.list[str], env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None, stdio: Any = None,
             tty: bool = False) -> int:
        """Run ``argv`` in the running container; its exit code."""
        return self.lifecycle.exec(ref, argv, env=env, user=user, workdir=workdir, stdio=stdio,
                                   tty=tty)

    def wait(self, ref: str, *, healthy: bool = False, timeout: float | None = None) -> int | str:
        """Until the container exits (its exit code) or, with ``healthy``,
        until its health check passes (see Lifecycle.wait)."""
        return self.lifecycle.wait(ref, healthy=healthy, timeout=timeout)

    # -- reconciliation (runtime.reconcile) ------------------------------------------
    def reconcile(self) -> builtins.list[str]:
        """Fix the state of every container whose owner died; their names."""
        from .reconcile import reconcile_all

        return reconcile_all(self.records, self.bundles)


_IMAGE_CHECK_DONE = False


def register_image_check() -> None:
    """Tell the image store which containers use an image (image rm refuses);
    ``image rm`` calls it, as it makes no Engine."""
    global _IMAGE_CHECK_DONE
    if _IMAGE_CHECK_DONE:
        return
    _IMAGE_CHECK_DONE = True
    try:
        from . import images
    except ImportError:
        return
    reg = getattr(images, "register_user_check", None)
    if reg is not None:
        reg(image_users)

