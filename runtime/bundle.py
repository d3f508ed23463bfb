"""A container's run, made and unmade: the root mounted, volumes and network
attached, the files it sees (``/etc/hosts``, ``/etc/hostname``,
``/etc/resolv.conf``) and ``bundle/config.json`` written.

:meth:`Bundles.prepare` undoes all of it on any failure; :meth:`Bundles.teardown`
undoes it after a run and is idempotent (a crash half-way is finished by the
next call).  The lifecycle, the supervisor and the reconciliation use the
same object, handed to them by the engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import diag
from . import rootfs as rootfs_mod
from .errors import BadInput
from .options import Mount, split_extra_host
from .records import Container, ContainerRecords, pid_alive

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .spec import ResolvedMount


class Bundles:
    """Runs of the containers of one store, with its volume provider and
    network manager (or None)."""

    def __init__(self, store: Any, records: ContainerRecords, volumes: Any, network: Any) -> None:
        self.store = store
        self.records = records
        self.volumes = volumes
        self.network = network

    def executor_for(self, c: Container) -> Any:
        from . import executors

        return executors.get(c.runtime, self.store.root)

    def prestart(self, c: Container, ip: str | None = None) -> None:
        """The part of :meth:`prepare` that needs neither the volumes' final
        data nor the network address to be free: the root (the image's
        layers and the container's own upper) mounted and, on a bridge
        network when its address is known (``--ip``, or ``ip``: an upgrade's
        successor's, still its predecessor's), the network namespace with
        its veth, configured inside (NetworkManager.stage).  :meth:`prepare`
        finds them made and goes on from there; :meth:`teardown` undoes
        them."""
        rootfs_mod.mount_rootfs(c.dir, list(c.lowers), volatile=c.options.rm)
        ip = c.options.ip or ip
        if ip and self.network is not None and c.options.network not in ("none", "host"):
            self.network.stage(c.id, c.options.network, ip)

    def prepare(self, c: Container) -> None:
        """Mount the root (unless :meth:`prestart` did), attach volumes and network, write config.json.
        On any failure everything done here is undone."""
        from . import spec as spec_mod
        from .cgroups import cgroups_path

        mounts: list[Any] = []
        try:
            rootfs = rootfs_mod.mount_rootfs(c.dir, list(c.lowers), volatile=c.options.rm)
            hostname = c.options.hostname or c.short_id
            proc = spec_mod.resolve_process(rootfs, c.image_config, c.options, hostname)
            if c.options.tty and not any(e.startswith("TERM=") for e in proc.env):
                proc.env.append("TERM=xterm")  # as docker run -t
            if c.options.socket_activate:
                proc.env[:] = [*self._listen_sockets(c), *(
                    e for e in proc.env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID=",
                                                              "LISTEN_FDNAMES=")))]
            mounts = self._resolve_mounts(c, rootfs)
            netns, host_net, hosts = self._network_setup(c, hostname)
            if hosts is None and (not host_net or c.options.extra_hosts):
                hosts = str(c.dir / "hosts")
                write_file(Path(hosts), _own_hosts(hostname, host_net, c.options.extra_hosts),
                           0o644)
            write_file(c.dir / "hostname", hostname + "\n", 0o644)
            write_file(c.dir / "resolv.conf", spec_mod.host_resolv_conf(
                host_net, c.options.dns, c.options.dns_search), 0o644)
            # as the container will see them: an image's symlinks followed
            # inside its root (never out of it), so the mounts land there
            files = [(spec_mod.special_file_target(rootfs, dest), src, ro) for dest, src, ro in (
                [("/etc/hosts", hosts, True)] if hosts else []) + [
                ("/etc/hostname", str(c.dir / "hostname"), False),
                ("/etc/resolv.conf", str(c.dir / "resolv.conf"), False)]]
            cwd_rel = spec_mod.resolve_in_root(rootfs, proc.cwd, what="working directory")
            (rootfs / cwd_rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
            spec = spec_mod.build_spec(
                proc, hostname=hostname, mounts=mounts, netns=netns, share_host_net=host_net,
                cgroups_path=cgroups_path(c.id), memory=c.options.memory,
                pids_limit=c.options.pids_limit, files=files, readonly_root=c.options.read_only,
                terminal=c.options.tty,
            )
            # written again at every start, so no fsync (it cost each start ~1-2 ms)
            write_file(c.bundle / "config.json", json.dumps(spec, indent=1), 0o600)  # -e values
            self.records.update(c.id, mounts=[m.to_record() for m in mounts])
        except BaseException:
            self.teardown(c)
            for m in mounts:  # attached but not yet recorded
                if m.kind == "volume":
                    try:
                        self.volumes.detach(m.name, c.id)
                    except Exception as exc:  # noqa: BLE001 - undo continues
                        diag.ignored(__name__, f"detaching volume {m.name} (undo)", exc)
            raise

    def _listen_sockets(self, c: Container) -> list[str]:
        """The container's ``--socket-activate`` sockets bound and held
        (runtime.sockholder; BadInput when a port is taken), and the
        environment that tells its first process about them."""
        from . import sockholder

        if self.network is not None:
            for lease in self.network.leases():
                if lease.container_id == c.id:
                    continue
                for theirs in lease.ports:
                    for mine in c.options.socket_activate:
                        if theirs.proto == "tcp" and theirs.host_port == mine.host_port and (
                                {theirs.host_ip, mine.host_ip} & {"", "0.0.0.0"}
                                or theirs.host_ip == mine.host_ip):
                            raise BadInput(f"--socket-activate {mine.host_port}: the port is "
                                           f"published by container {lease.container_id[:12]}")
        sockholder.ensure(self.store.root, c.id, c.options.socket_activate)
        return sockholder.env(c.options.socket_activate)

    def _resolve_mounts(self, c: Container, rootfs: Path) -> list[ResolvedMount]:
        from .spec import ResolvedMount, resolve_in_root

        wanted = list(c.options.mounts)
        given = len(wanted)
        covered = {m.target.rstrip("/") for m in wanted}
        for path in sorted((c.image_config.get("config") or {}).get("Volumes") or {}):
            # An image VOLUME nobody mounted gets a volume named after the
            # container, so that a successor of the same name finds its data.
            if path.rstrip("/") not in covered and path.startswith("/"):
                slug = "".join(ch if ch.isalnum() else "_" for ch in path.strip("/")) or "root"
                wanted.append(Mount("volume", path, f"{c.name}_{slug}"))
        out: list[ResolvedMount] = []
        try:
            for i, m in enumerate(wanted):
                target = resolve_in_root(rootfs, m.target, what="mount target")
                if target == "/":
                    raise BadInput(f"mount target {m.target} resolves to / in the image")
                host_target = rootfs / target.lstrip("/")
                if m.kind == "volume":
                    seed = host_target if host_target.is_dir() else None
                    src = str(self.volumes.attach(m.source, c.id, seed, readonly=m.readonly,
                                                  anonymous=i >= given))
                    out.append(ResolvedMount("volume", src, target, m.readonly, (), m.source))
                    host_target.mkdir(parents=True, exist_ok=True)
                elif m.kind == "bind":
                    if not os.path.exists(m.source):
                        raise BadInput(f"bind mount source {m.source} does not exist")
                    if os.path.isdir(m.source):
                        host_target.mkdir(parents=True, exist_ok=True)
                    elif not host_target.exists():
                        host_target.parent.mkdir(parents=True, exist_ok=True)
                        host_target.touch()
                    out.append(ResolvedMount("bind", m.source, target, m.readonly))
                else:
                    host_target.mkdir(parents=True, exist_ok=True)
                    out.append(ResolvedMount("tmpfs", "tmpfs", target, m.readonly,
                                             tuple(m.options)))
        except BaseException:
            for r in out:
                if r.kind == "volume":
                    self.volumes.detach(r.name, c.id)
            raise
        return out

    def _network_setup(self, c: Container, hostname: str) -> tuple[str | None, bool, str | None]:
        """(netns path or None for a fresh one, share the host's?, hosts file).
        The one place where the network manager is wired in."""
        net = c.options.network
        if net == "host":
            return None, True, None
        if net == "none" or self.network is None:
            return None, False, None
        # net None: the default network (created on first use by the manager)
        ports = [f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}:{p.container_port}/{p.proto}"
                 for p in c.options.ports]
        att = self.network.connect(c.id, net, hostname, ip=c.options.ip,
                                   ports=ports, aliases=[c.name, *c.options.aliases],
                                   extra_hosts=_extra_hosts(c.options.extra_hosts))
        return str(att.netns_path), False, (str(att.hosts_path) if att.hosts_path else None)

    def ready_for_teardown(self, c: Container) -> None:
        """Import, while the container runs, what tearing its network down
        takes (a detached container's supervisor calls it once the run is
        reported): paid at the stop, the imports were ~15-30 ms of it."""
        if self.network is not None and c.options.network not in ("none", "host"):
            self.network.ready_for_teardown()

    def teardown(self, c: Container) -> None:
        """Undo prepare: runtime state, cgroups, mounts, volumes, network.
        The network's teardown goes around the rest: its published ports
        leave the nft table while the root and the volumes are unmounted."""
        finish = self._begin_disconnect(c)
        try:
            try:
                self.executor_for(c).cleanup(c.id)
            except (BadInput, OSError):
                pass
            rootfs_mod.umount_rootfs(c.dir)
            # Every volume the container may have attached: the recorded mounts,
            # plus what it asked for (a start cut short attaches before recording).
            names = {m["name"] for m in self.records.recorded_mounts(c)
                     if m.get("kind") == "volume"}
            names |= {m.source for m in c.options.mounts if m.kind == "volume"}
            for name in sorted(names):
                try:
                    self.volumes.detach(name, c.id)
                except Exception as exc:  # noqa: BLE001 - teardown continues
                    diag.ignored(__name__, f"detaching volume {name} (teardown)", exc)
        finally:
            try:
                finish()
            except Exception as exc:  # noqa: BLE001 - teardown continues
                diag.ignored(__name__, "disconnecting the network (teardown)", exc)

    def _begin_disconnect(self, c: Container) -> Callable[[], None]:
        if self.network is None or c.options.network in ("none", "host"):
            return _nothing
        try:
            return self.network.begin_disconnect(c.id)
        except Exception as exc:  # noqa: BLE001 - teardown continues
            diag.ignored(__name__, "disconnecting the network (teardown)", exc)
            return _nothing


def _nothing() -> None:
    pass


def _extra_hosts(entries: list[str]) -> list[tuple[str, str]]:
    return [split_extra_host(e) for e in entries]


def _own_hosts(hostname: str, host_net: bool, extra: list[str]) -> str:
    """/etc/hosts of a container the network manager does not serve (none is
    configured): the host's own file on the host network, else localhost;
    then ``--add-host`` lines and the container's name."""
    base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
    if host_net:
        try:
            base = Path("/etc/hosts").read_text()
        except OSError:
            pass
        base += "" if base.endswith("\n") else "\n"
    lines = "".join(f"{ip}\t{host}\n" for host, ip in _extra_hosts(extra))
    return f"{base}{lines}127.0.1.1\t{hostname}\n"


def netns_of(c: Container) -> str | None:
    """Where the container's network namespace is seen from the host."""
    if c.options.network == "host":
        return None
    if c.pid and pid_alive(c.pid, None):
        return f"/proc/{c.pid}/ns/net"
    return None


def write_file(path: Path, text: str, mode: int) -> None:
    """Write ``path`` with exactly ``mode`` whatever the caller's umask (a
    container's /etc/hosts, /etc/resolv.conf are bind-mounted: 0666 would let
    its non-root users change them), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, mode)
        f.write(text)
