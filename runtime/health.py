"""Health checks: Docker's HEALTHCHECK semantics plus TCP and HTTP probes.

The supervisor of a running container runs :class:`HealthMonitor` in a
thread; the status lives in the state database so that ``ps``, ``inspect``
and ``wait --healthy`` (runtime.polling's wait, :func:`wait_healthy`) read it
from any process.

Status: ``starting`` until the first success (failures inside the start
period do not count), ``healthy`` after a success, ``unhealthy`` after
``retries`` consecutive failures.  TCP and HTTP probes run from the host,
inside the container's network namespace (a thread enters it with setns and
makes the socket there), so they work on ``--network none`` too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .options import HealthConfig

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import socket
    from typing import Any

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


@dataclass
class HealthStatus:
    """A container's health: status, failing streak, the last checks' log."""

    status: str | None                    # None: no health check
    failing_streak: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


def from_image(image_config: dict[str, Any]) -> HealthConfig | None:
    """The image's HEALTHCHECK (OCI config ``Healthcheck``, durations in ns)."""
    hc = (image_config.get("config") or {}).get("Healthcheck")
    if not hc or not hc.get("Test"):
        return None
    ns = 1e-9

    def dur(key: str, default: float) -> float:
        v = hc.get(key)
        return v * ns if v else default

    return HealthConfig(test=list(hc["Test"]), interval=dur("Interval", 30.0),
                        timeout=dur("Timeout", 30.0), retries=int(hc.get("Retries") or 3),
                        start_period=dur("StartPeriod", 0.0))


def effective(opts_health: HealthConfig | None, image_config: dict[str, Any]) -> HealthConfig | None:
    hc = opts_health if opts_health is not None else from_image(image_config)
    if hc is None or hc.disabled:
        return None
    return hc


def socket_in_netns(netns: str | None, family: int | None = None) -> socket.socket:
    """A TCP socket created inside the network namespace at path ``netns``
    (``family`` default AF_INET)."""
    import socket

    family = socket.AF_INET if family is None else family
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    box: dict[str, Any] = {}

    def make() -> None:
        from . import sys as rsys

        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                rsys.setns(fd, rsys.CLONE_NEWNET)  # this thread only; it ends here
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001
            box["err"] = exc

    t = threading.Thread(target=make, daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["sock"]


def probe_tcp(netns: str | None, host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        s = socket_in_netns(netns)
    except OSError as exc:
        return False, f"cannot enter network namespace: {exc}"
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return True, f"tcp {host}:{port} open"
    except OSError as exc:
        return False, f"tcp {host}:{port}: {exc.strerror or exc}"
    finally:
        s.close()


def probe_http(netns: str | None, url: str, timeout: float) -> tuple[bool, str]:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url if "://" in url else "http://" + url)
    host = u.hostname or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    port = u.port or 80
    try:
        s = socket_in_netns(netns)
        s.settimeout(timeout)
        s.connect((host, port))
    except OSError as exc:
        return False, f"http {url}: {exc.strerror or exc}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = s
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""),
                     headers={"Host": u.netloc or host, "User-Agent": "volmerge-health"})
        r = conn.getresponse()
        r.read(4096)
        return 200 <= r.status < 400, f"http {url}: {r.status} {r.reason}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"http {url}: {exc}"
    finally:
        conn.close()


class HealthMonitor:
    """Runs one container's checks until stopped; reports through ``record``."""

    def __init__(self, cfg: HealthConfig, *, exec_check: Callable[[list[str], float], tuple[int, str]],
                 netns: str | None, record: Callable[[HealthStatus], None]) -> None:
        self.cfg = cfg
        self.exec_check = exec_check
        self.netns = netns
        self.record = record
        self.stop_event = threading.Event()
        self.status = HealthStatus(STARTING)
        self.thread = threading.Thread(target=self._loop, name="health", daemon=True)

    def start(self) -> None:
        self.record(self.status)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=self.cfg.timeout + 5)

    def check_once(self) -> tuple[bool, str]:
        cfg = self.cfg
        if cfg.tcp_port is not None:
            ok, out = probe_tcp(self.netns, "127.0.0.1", cfg.tcp_port, cfg.timeout)
            if not ok or (not cfg.http_url and not _has_cmd(cfg)):
                return ok, out
        if cfg.http_url:
            ok, out = probe_http(self.netns, cfg.http_url, cfg.timeout)
            if not ok or not _has_cmd(cfg):
                return ok, out
        test = cfg.test
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
        try:
            code, out = self.exec_check(argv, cfg.timeout)
        except TimeoutError:
            return False, f"health check timed out after {cfg.timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a failed exec is a failed check
            return False, str(exc)
        return code == 0, out

    def _loop(self) -> None:
        started = time.monotonic()
        first = True
        while not self.stop_event.is_set():
            # Docker runs the first check one interval after start; a short
            # first delay makes `wait --healthy` quick when the service is.
            delay = min(self.cfg.interval, 0.2) if first else self.cfg.interval
            if self.status.status == STARTING and not first:
                delay = min(self.cfg.interval, max(0.2, self.cfg.interval / 4))
            first = False
            if self.stop_event.wait(delay):
                return
            t0 = time.time()
            ok, out = self.check_once()
            if self.stop_event.is_set():
                return
            st = self.status
            st.log = (st.log + [{"start": t0, "end": time.time(), "exit_code": 0 if ok else 1,
                                 "output": out[-4096:]}])[-5:]
            if ok:
                st.status, st.failing_streak = HEALTHY, 0
            else:
                in_start_period = time.monotonic() - started < self.cfg.start_period
                if not (in_start_period and st.status == STARTING):
                    st.failing_streak += 1
                    if st.failing_streak >= max(1, self.cfg.retries):
                        st.status = UNHEALTHY
            self.record(st)


def _has_cmd(cfg: HealthConfig) -> bool:
    return bool(cfg.test) and cfg.test[0] in ("CMD", "CMD-SHELL") and len(cfg.test) > 1


def wait_healthy(read: Callable[[], tuple[str, str | None]], timeout: float | None) -> str:
    """Poll ``read() -> (state, health)`` until healthy (return it), or raise
    RuntimeError with the reason (exited, unhealthy, timed out)."""
    from .polling import wait_until

    def verdict() -> str | None:
        state, health = read()
        if health == HEALTHY:
            return HEALTHY
        if state not in ("running", "restarting", "paused", "created"):
            raise RuntimeError(f"container is {state}")
        if health == UNHEALTHY:
            raise RuntimeError("container is unhealthy")
        if health is None and state == "running":
            return "running"  # no health check: running counts as healthy
        return None

    result = wait_until(verdict, timeout=timeout, interval=0.02, max_interval=0.25)
    if result is None:
        raise RuntimeError(f"not healthy after {timeout:g}s")
    return result
