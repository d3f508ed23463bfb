"""Everything ``run`` accepts, as plain JSON-serialisable value classes
(runtime.value: no dataclass is generated on the run path).

RunOptions holds only what the operator said.  Image defaults (Cmd,
Entrypoint, Env, WorkingDir, User, Healthcheck) are applied when the spec is
built, so an upgrade can start a successor with
``old.options.replace(image=new_ref)`` and get the *new* image's
defaults wherever the operator did not override them.
"""

from __future__ import annotations

import re

from .errors import BadInput
from .value import Value, fields, plain

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# Names are checked with ``fullmatch``: ``$`` also matches before a final
# newline, so ``re.match`` with ``^...$`` let ``web\n`` pass beside ``web``.
# The patterns stay strings: ``re.fullmatch`` compiles one the first time it is
# used (and caches it), so a run that sets no name, host name or user compiles none.
NAME_RE = r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}"   # containers (Docker's rule)
VOLUME_NAME_RE = NAME_RE
# RFC 1123 host names: dot-separated labels of letters, digits and inner '-'.
_LABEL_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A user or group name as useradd accepts it (a trailing '$' for machine accounts).
_ACCOUNT_RE = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?"
MAX_ID = 2**31 - 1          # runc refuses larger ids ((uid_t)-1 is "no change" to the kernel)
MOUNT_MODES = ("ro", "rw")


class Mount(Value):
    """One ``-v`` or ``--tmpfs`` mount.  kind: "bind" | "volume" | "tmpfs"."""

    __slots__ = ("kind", "target", "source", "readonly", "options")

    def __init__(self, kind: str, target: str, source: str = "", readonly: bool = False,
                 options: list[str] | None = None) -> None:
        self.kind = kind
        self.target = target
        self.source = source
        self.readonly = readonly
        self.options: list[str] = [] if options is None else options

    def spec_string(self) -> str:
        if self.kind == "tmpfs":
            return self.target
        return f"{self.source}:{self.target}" + (":ro" if self.readonly else "")


class PortSpec(Value):
    """``-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]``."""

    __slots__ = ("host_port", "container_port", "proto", "host_ip")

    def __init__(self, host_port: int, container_port: int, proto: str = "tcp",
                 host_ip: str = "") -> None:
        self.host_port = host_port
        self.container_port = container_port
        self.proto = proto
        self.host_ip = host_ip


class HealthConfig(Value):
    """A health check.  ``test`` follows Docker: ["CMD", argv...],
    ["CMD-SHELL", "cmd"], or ["NONE"]; ``tcp_port``/``http_url`` are probes
    run from the host side inside the container's network namespace."""

    __slots__ = ("test", "interval", "timeout", "retries", "start_period", "tcp_port",
                 "http_url")

    def __init__(self, test: list[str] | None = None, interval: float = 30.0,
                 timeout: float = 30.0, retries: int = 3, start_period: float = 0.0,
                 tcp_port: int | None = None, http_url: str | None = None) -> None:
        self.test: list[str] = [] if test is None else test
        self.interval = interval
        self.timeout = timeout
        self.retries = retries
        self.start_period = start_period
        self.tcp_port = tcp_port
        self.http_url = http_url

    @property
    def disabled(self) -> bool:
        return (not self.test or self.test[0] == "NONE") and self.tcp_port is None \
            and not self.http_url


class RestartPolicy(Value):
    """``--restart no|on-failure[:N]|always`` (N = 0 means no limit)."""

    __slots__ = ("name", "max_retries")

    def __init__(self, name: str = "no", max_retries: int = 0) -> None:
        self.name = name
        self.max_retries = max_retries


class RunOptions(Value):
    """Everything ``volmerge run``/``create`` was asked for, checked.

    ``command``/``entrypoint``/``workdir``/``user``/``health`` None: the
    image's (Cmd, Entrypoint, WorkingDir, User, Healthcheck); ``network``
    None, "none", "host" or a network name; ``runtime`` "runc", "builtin" or
    None (chosen); ``memory`` in bytes; ``read_only``: the root file system
    mounted read-only; ``tty``: a pseudo-terminal (foreground runs only);
    ``dns``/``dns_search``: nameservers and search domains instead of the
    host's; ``aliases``: more names on the network (compose);
    ``stop_signal`` None: the image's StopSignal, else SIGTERM;
    ``extra_hosts``: "HOST:IP" lines for /etc/hosts; ``socket_activate``:
    listening sockets volmerge binds on the host and passes in as fd 3..
    (LISTEN_FDS), held across upgrades (runtime.sockholder)."""

    __slots__ = ("image", "name", "command", "entrypoint", "env", "workdir", "user", "mounts",
                 "ports", "network", "ip", "hostname", "health", "restart", "runtime", "rm",
                 "detach", "labels", "memory", "pids_limit", "read_only", "tty", "dns",
                 "dns_search", "aliases", "stop_signal", "extra_hosts", "socket_activate")

    def __init__(self, image: str, name: str | None = None, command: list[str] | None = None,
                 entrypoint: list[str] | None = None, env: dict[str, str] | None = None,
                 workdir: str | None = None, user: str | None = None,
                 mounts: list[Mount] | None = None, ports: list[PortSpec] | None = None,
                 network: str | None = None, ip: str | None = None,
                 hostname: str | None = None, health: HealthConfig | None = None,
                 restart: RestartPolicy | None = None, runtime: str | None = None,
                 rm: bool = False, detach: bool = False, labels: dict[str, str] | None = None,
                 memory: int | None = None, pids_limit: int | None = None,
                 read_only: bool = False, tty: bool = False, dns: list[str] | None = None,
                 dns_search: list[str] | None = None, aliases: list[str] | None = None,
                 stop_signal: str | None = None, extra_hosts: list[str] | None = None,
                 socket_activate: list[PortSpec] | None = None) -> None:
        self.image = image
        self.name = name
        self.command = command
        self.entrypoint = entrypoint
        self.env: dict[str, str] = {} if env is None else env
        self.workdir = workdir
        self.user = user
        self.mounts: list[Mount] = [] if mounts is None else mounts
        self.ports: list[PortSpec] = [] if ports is None else ports
        self.network = network
        self.ip = ip
        self.hostname = hostname
        self.health = health
        self.restart = RestartPolicy() if restart is None else restart
        self.runtime = runtime
        self.rm = rm
        self.detach = detach
        self.labels: dict[str, str] = {} if labels is None else labels
        self.memory = memory
        self.pids_limit = pids_limit
        self.read_only = read_only
        self.tty = tty
        self.dns: list[str] = [] if dns is None else dns
        self.dns_search: list[str] = [] if dns_search is None else dns_search
        self.aliases: list[str] = [] if aliases is None else aliases
        self.stop_signal = stop_signal
        self.extra_hosts: list[str] = [] if extra_hosts is None else extra_hosts
        self.socket_activate: list[PortSpec] = [] if socket_activate is None \
            else socket_activate

    # -- JSON ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = plain(self)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunOptions:
        d = dict(d)
        d["mounts"] = [Mount(**m) for m in d.get("mounts") or []]
        d["ports"] = [PortSpec(**p) for p in d.get("ports") or []]
        d["socket_activate"] = [PortSpec(**p) for p in d.get("socket_activate") or []]
        if d.get("health") is not None:
            d["health"] = HealthConfig(**d["health"])
        d["restart"] = RestartPolicy(**(d.get("restart") or {}))
        known = fields(cls)
        return cls(**{k: v for k, v in d.items() if k in known})


# -- parsers for the CLI syntax (each raises BadInput with one line) -----------

def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise BadInput(f"invalid container name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def parse_volume(spec: str) -> Mount:
    """``/host:/ctr[:ro|rw]`` (bind) or ``NAME:/ctr[:ro|rw]`` (named volume)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise BadInput(f"bad mount spec {spec!r}: expected SOURCE:/PATH[:ro]")
    src, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in MOUNT_MODES:
        raise BadInput(f"bad mount spec {spec!r}: mode must be ro or rw, not {mode!r}")
    _check_target(target, spec)
    if src.startswith("/"):
        import os

        if not os.path.exists(src):
            raise BadInput(f"bad mount spec {spec!r}: host path {src} does not exist")
        return Mount("bind", target, os.path.realpath(src), mode == "ro")
    if src.startswith("."):
        raise BadInput(f"bad mount spec {spec!r}: host paths must be absolute")
    if not re.fullmatch(VOLUME_NAME_RE, src):
        raise BadInput(f"bad mount spec {spec!r}: invalid volume name {src!r}")
    return Mount("volume", target, src, mode == "ro")


def parse_tmpfs(spec: str) -> Mount:
    target, _, opts = spec.partition(":")
    _check_target(target, spec)
    options = [o for o in opts.split(",") if o]
    for o in options:
        if not re.fullmatch(r"size=\d+[kmgKMG]?|mode=[0-7]{3,4}|ro|rw|noexec|exec|nosuid|nodev", o):
            raise BadInput(f"bad tmpfs spec {spec!r}: unknown option {o!r}")
    return Mount("tmpfs", target, "tmpfs", "ro" in options, [o for o in options if o != "ro"])


def _check_target(target: str, spec: str) -> None:
    if not target.startswith("/"):
        raise BadInput(f"bad mount spec {spec!r}: container path must be absolute")
    if any(p == ".." for p in target.split("/")):
        raise BadInput(f"bad mount spec {spec!r}: container path must not contain '..'")
    if target.rstrip("/") == "":
        raise BadInput(f"bad mount spec {spec!r}: cannot mount over /")


def parse_port(spec: str) -> PortSpec:
    proto = "tcp"
    body = spec
    if "/" in spec:
        body, proto = spec.rsplit("/", 1)
    if proto not in ("tcp", "udp"):
        raise BadInput(f"bad port spec {spec!r}: protocol must be tcp or udp")
    parts = body.split(":")
    try:
        if len(parts) == 1:
            hp = cp = int(parts[0])
            ip = ""
        elif len(parts) == 2:
            ip, hp, cp = "", int(parts[0]), int(parts[1])
        elif len(parts) == 3:
            ip, hp, cp = parts[0], int(parts[1]), int(parts[2])
        else:
            raise ValueError
    except ValueError:
        raise BadInput(f"bad port spec {spec!r}: expected [IP:]HOST_PORT:CONTAINER_PORT") from None
    for p in (hp, cp):
        if not 0 < p < 65536:
            raise BadInput(f"bad port spec {spec!r}: port {p} out of range")
    return PortSpec(hp, cp, proto, ip)


def parse_socket_activate(spec: str) -> PortSpec:
    """``--socket-activate [HOST_IP:]HOST_PORT[:CONTAINER_PORT]``: a TCP port
    volmerge listens on in the host's network namespace (on every address, or
    on HOST_IP) and passes into the container; CONTAINER_PORT (default
    HOST_PORT) only names the socket (LISTEN_FDNAMES)."""
    import ipaddress

    body, slash, proto = spec.partition("/")
    if slash and proto != "tcp":
        raise BadInput(f"bad --socket-activate {spec!r}: socket activation is TCP only")
    parts = body.split(":")
    ports = parts[-2:] if len(parts) > 1 else parts * 2
    ip = parts[0] if len(parts) == 3 else ""
    try:
        if len(parts) > 3 or not all(x.isascii() and x.isdigit() for x in ports):
            raise ValueError
        ip = str(ipaddress.IPv4Address(ip)) if ip else ""
        hp, cp = int(ports[0]), int(ports[1])
    except ValueError:
        raise BadInput(f"bad --socket-activate {spec!r}: expected "
                       "[IPV4:]HOST_PORT[:CONTAINER_PORT]") from None
    for p in (hp, cp):
        if not 0 < p < 65536:
            raise BadInput(f"bad --socket-activate {spec!r}: port {p} out of range 1..65535")
    return PortSpec(hp, cp, "tcp", ip)


def check_socket_activate(opts: RunOptions) -> None:
    """Sockets the container is given are not also published (-p): the
    NAT rule would take their packets away from the socket."""
    seen: list[PortSpec] = []
    for s in opts.socket_activate:
        for o in [*seen, *opts.ports]:
            anywhere = {"", "0.0.0.0"}
            same_ip = bool(anywhere & {s.host_ip, o.host_ip}) or s.host_ip == o.host_ip
            if o.proto == "tcp" and o.host_port == s.host_port and same_ip:
                raise BadInput(f"host port {s.host_port} is given twice (-p and "
                               "--socket-activate, or --socket-activate twice)")
        seen.append(s)


def parse_restart(spec: str) -> RestartPolicy:
    name, _, n = spec.partition(":")
    if name in ("no", "always", "unless-stopped") and not n:
        return RestartPolicy("always" if name == "unless-stopped" else name)
    if name == "on-failure":
        try:
            k = int(n) if n else 0
            if k < 0:
                raise ValueError
        except ValueError:
            raise BadInput(f"bad restart policy {spec!r}: retry count must be a number >= 0") from None
        return RestartPolicy("on-failure", k)
    raise BadInput(f"bad restart policy {spec!r}: expected no, on-failure[:N] or always")


def parse_env(items: list[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    import os

    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k or "\0" in item:
            raise BadInput(f"bad environment variable {item!r}: expected KEY=VALUE")
        if not sep:  # -e KEY takes the value from the caller's environment
            if k not in environ:
                continue
            v = environ[k]
        out[k] = v
    return out


def parse_dns(items: list[str]) -> list[str]:
    """``--dns``: IP addresses (v4 or v6)."""
    out: list[str] = []
    if not items:
        return out
    import ipaddress

    for item in items:
        try:
            out.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            raise BadInput(f"bad --dns {item!r}: expected an IP address") from None
    return out


def parse_dns_search(items: list[str], what: str = "--dns-search") -> list[str]:
    """``--dns-search``: domain names (a trailing dot allowed), or ``.`` (no
    search domain, as Docker's).  Each becomes part of the container's
    /etc/resolv.conf ``search`` line: a newline or a space in one would add
    lines (another nameserver) or domains of its own."""
    for item in items:
        if item != "." and (not isinstance(item, str) or not item.removesuffix(".")
                            or not _is_hostname(item.removesuffix("."))):
            raise BadInput(f"bad {what} {item!r}: expected a domain name (or '.')")
    return list(items)


def _is_hostname(name: str) -> bool:
    try:
        check_hostname(name)
    except BadInput:
        return False
    return True


def parse_add_host(items: list[str], what: str = "--add-host") -> list[str]:
    """``--add-host HOST:IP`` (or ``HOST=IP``, IPv6 also in brackets), as
    ``HOST:IP`` with the address normalised.  The host is checked as
    ``--hostname`` is: a hosts file line must not carry a second name or
    a newline into the container's /etc/hosts."""
    out: list[str] = []
    if not items:
        return out
    import ipaddress

    for item in items:
        if not isinstance(item, str):
            raise BadInput(f"bad {what} {item!r}: expected HOST:IP")
        eq, colon = item.find("="), item.find(":")
        sep = "=" if eq != -1 and (colon == -1 or eq < colon) else ":"
        host, found, ip = item.partition(sep)
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        try:
            addr = str(ipaddress.ip_address(ip)) if found and "%" not in ip else ""
        except ValueError:  # (a "%zone" would carry any character into the file)
            addr = ""
        if not addr:
            raise BadInput(f"bad {what} {item!r}: expected HOST:IP with an IP address")
        try:
            check_hostname(host)
        except BadInput:
            raise BadInput(f"bad {what} {item!r}: invalid host name {host!r} "
                           "(RFC 1123)") from None
        out.append(f"{host}:{addr}")
    return out


def split_extra_host(entry: str) -> tuple[str, str]:
    """(host, ip) of an ``extra_hosts`` entry as parse_add_host wrote it."""
    host, _, ip = entry.partition(":")
    return host, ip


def read_env_file(path: str) -> list[str]:
    """``--env-file``: KEY=VALUE lines as Docker reads them (``#`` comments
    and blank lines skipped, a bare KEY takes the caller's value), in order,
    to come before the ``-e`` options."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"env file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        item = line.lstrip()
        if not item or item.startswith("#"):
            continue
        key = item.partition("=")[0]
        if not key or any(ch.isspace() for ch in key):
            raise BadInput(f"env file {path}: line {n}: bad variable {line.strip()!r}: expected KEY=VALUE")
        out.append(item)
    return out


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bytes(spec: str) -> int:
    m = re.fullmatch(r"(\d+)([bkmgBKMG]?)", spec.strip())
    if not m:
        raise BadInput(f"bad size {spec!r}: expected a number with an optional b/k/m/g suffix")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n > 2**63 - 1:  # the OCI spec's int64 (runc refused the spec with its own error)
        raise BadInput(f"bad size {spec!r}: too large")
    return n


def parse_duration(spec: str) -> float:
    """``30s``, ``1m``, ``500ms``, ``1.5`` (seconds)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", spec.strip())
    if not m:
        raise BadInput(f"bad duration {spec!r}: expected e.g. 500ms, 5s, 1m")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


# -- checks of single values (each raises BadInput with one line) ---------------

def check_hostname(name: str) -> str:
    """An RFC 1123 host name: labels of 1-63 letters, digits and inner '-',
    joined by '.', 253 characters at most (what the kernel's UTS name and
    every resolver accept)."""
    if (not isinstance(name, str) or not 0 < len(name) <= 253
            or not all(re.fullmatch(_LABEL_RE, label) for label in name.split("."))):
        raise BadInput(f"invalid hostname {name!r}: use dot-separated labels of letters, "
                       "digits and '-' (RFC 1123)")
    return name


def check_user(spec: str) -> str:
    """``-u USER[:GROUP]``: each a name or a number in 0..2**31-1 (runc's range).  Names
    are looked up in the image when the container is built."""
    user, sep, group = spec.partition(":")
    for part, what in ((user, "user"), (group, "group")):
        if part == "" and (what == "group" and not sep):
            continue
        if part.isascii() and part.isdigit():
            if int(part) > MAX_ID:
                raise BadInput(f"invalid -u {spec!r}: {what} id {part} out of range 0..{MAX_ID}")
        elif not re.fullmatch(_ACCOUNT_RE, part):
            raise BadInput(f"invalid -u {spec!r}: expected USER[:GROUP], names or ids 0..{MAX_ID}")
    return spec


def check_port(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise BadInput(f"invalid {what} {port}: a port is 1..65535")
    return port


def check_http_url(url: str) -> str:
    """``--health-http``: ``http://HOST[:PORT]/PATH`` or ``HOST[:PORT]/PATH``
    (what runtime.health.probe_http requests: plain HTTP only)."""
    from urllib.parse import urlsplit

    bad = f"invalid --health-http {url!r}: expected http://HOST[:PORT][/PATH]"
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BadInput(bad)
    try:
        u = urlsplit(url if "://" in url else "http://" + url)
        port = u.port
    except ValueError:
        raise BadInput(bad) from None
    if u.scheme != "http" or not u.hostname or (port is not None and not 0 < port < 65536):
        raise BadInput(bad)
    host = u.hostname
    try:
        import ipaddress

        ipaddress.ip_address(host)
    except ValueError:
        check_hostname(host)
    return url


def check_ip(ip: str) -> str:
    """``--ip``: an IPv4 address (networks are IPv4)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(ip))
    except ValueError:
        raise BadInput(f"invalid --ip {ip!r}: expected an IPv4 address") from None


def check_seconds(value: float, what: str, *, forever: bool = False) -> float:
    """A number of seconds an option gives (``-t``, ``--timeout``...): finite
    and >= 0 (NaN or infinity made waits raise or never end).  ``forever``:
    -1 is also accepted and means no limit (podman's ``stop -t -1``), given
    back as infinity."""
    if forever and value == -1:
        return float("inf")
    if not 0 <= value < float("inf"):
        extra = ", or -1 to wait without limit" if forever else ""
        raise BadInput(f"invalid {what} {value}: expected a number of seconds >= 0{extra}")
    return value


def check_pids_limit(n: int) -> int:
    """``--pids-limit``: N > 0, or -1 (Docker's "unlimited")."""
    if n == 0 or n < -1:
        raise BadInput(f"invalid --pids-limit {n}: expected a number > 0, or -1 for no limit")
    return n
