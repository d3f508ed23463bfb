"""The detached lifecycle: ``volmerge stop``, ``start`` and ``restart`` of a
busybox HTTP server against ``podman`` on the same image, side by side.

Run as root: ``.venv/bin/python bench/bench_lifecycle.py [-n RUNS] [--no-podman]``.
Everything happens in a private mount and network namespace (loopback up)
and temporary directories (podman gets its own --root and --runroot,
removed afterwards).  Both run the same container, detached, on the host
network of that namespace: ``sh -c 'trap "exit 0" TERM; httpd -f ... & wait'``,
a PID 1 that exits at once on SIGTERM (a bare ``httpd`` as PID 1 ignores it).
Every command is cold, as users run it: a fresh ``volmerge`` (or ``podman``)
process, no helper process kept warm.  Per round, interleaved:

- ``stop``: the time from the container's PID 1 exiting (a pidfd this
  process polls) to the command returning; goal <= 50 ms for volmerge;
- ``start``: a detached start until the command returns (it returns once the
  container runs); goal volmerge <= 0.5 x podman;
- ``restart``: how long a client connecting every 5 ms finds the server
  unreachable across ``restart`` (first refused connection to the first
  answered one after it);
- ``runc run -d`` alone on the same container's bundle, what every detached
  start on runc pays before its own work (volmerge's and podman's alike).

Prints the medians, the ratios, whether the goals are met and the load
average (the figures move with it).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc", "--events-backend", "file"]
PODMAN_RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
GOAL_STOP_MS, GOAL_START = 50.0, 0.5
POLL_S = 0.005


def server_argv(port: int) -> list[str]:
    """An HTTP server whose PID 1 (a shell) exits at once on SIGTERM."""
    return ["sh", "-c", f'trap "exit 0" TERM; httpd -f -p 127.0.0.1:{port} -h /etc & wait']


def check(cmd: list[str], env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:8])}... failed ({p.returncode}): {p.stderr[-500:]}")
    return p.stdout


def answers(port: int) -> bool:
    """Whether the server accepts a connection and answers an HTTP request."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/")
    except OSError:
        return False


def wait_answers(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing answers on port {port}")
        time.sleep(POLL_S)


class Engine:
    """One side of the comparison: how to start, stop and restart the
    container and find its PID 1 (a host pid)."""

    def __init__(self, name: str, base: list[str], env: dict[str, str] | None,
                 pid_of: Callable[[], int]) -> None:
        self.name, self.base, self.env, self._pid_of = name, base, env, pid_of

    def cmd(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def timed(self, *args: str) -> float:
        t0 = time.perf_counter()
        check(self.cmd(*args), self.env)
        return time.perf_counter() - t0

    def pid(self) -> int:
        return self._pid_of()


def stop_latency(eng: Engine, name: str) -> tuple[float, float]:
    """(seconds from PID 1's exit to ``stop`` returning, the whole ``stop``)."""
    pidfd = os.pidfd_open(eng.pid())
    exited: list[float] = []

    def watch() -> None:
        select.select([pidfd], [], [])
        exited.append(time.perf_counter())

    t = threading.Thread(target=watch)
    t.start()
    try:
        t0 = time.perf_counter()
        check(eng.cmd("stop", name), eng.env)
        t1 = time.perf_counter()
        t.join(5)
    finally:
        os.close(pidfd)
    if not exited:
        raise SystemExit(f"{eng.name}: stop returned but PID 1 still runs")
    return t1 - exited[0], t1 - t0


def unreachable(eng: Engine, name: str, port: int) -> float:
    """Seconds a client connecting every 5 ms finds nothing answering across
    ``restart``: from the first failed attempt to the next answered one."""
    stop = threading.Event()
    down: list[float] = []
    up: list[float] = []

    def client() -> None:
        while not stop.is_set():
            ok = answers(port)
            now = time.perf_counter()
            if not ok and not down:
                down.append(now)
            elif ok and down and not up:
                up.append(now)
                return
            time.sleep(POLL_S)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(0.05)
    check(eng.cmd("restart", name), eng.env)
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    stop.set()
    t.join()
    if not down:
        return 0.0
    if not up:
        raise SystemExit(f"{eng.name}: the server did not answer again after restart")
    return up[0] - down[0]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def per_round(a: list[float], b: list[float]) -> float:
    """The median of a[i] / b[i]: both were measured in the same round."""
    return statistics.median(x / y for x, y in zip(a, b))


def setup_volmerge(work: Path, archive: Path, ref: str, port: int) -> Engine:
    root = work / "vm"
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    env.pop("VOLMERGE_LOG", None)
    script = Path(sys.executable).parent / "volmerge"  # what users run
    base = [str(script)] if script.exists() else [sys.executable, "-m", "volmerge"]
    check([*base, "image", "load", str(archive)], env)
    check([*base, "run", "-d", "--name", "web", "--network", "host", ref,
           *server_argv(port)], env)

    def pid() -> int:
        return int(json.loads(check([*base, "inspect", "--json", "web"], env))[0]["pid"])

    return Engine("volmerge", base, env, pid)


def setup_podman(work: Path, archive: Path, ref: str, port: int) -> Engine:
    base = [*PODMAN, "--root", str(work / "pstore"), "--runroot", str(work / "prun"),
            "--tmpdir", str(work / "ptmp"), "--storage-driver", "overlay"]
    check([*base, "load", "-i", str(archive)])
    check([*base, "run", "-d", "--name", "web", "--network", "host", *PODMAN_RUN, ref,
           *server_argv(port)])

    def pid() -> int:
        return int(check([*base, "inspect", "-f", "{{.State.Pid}}", "web"]).strip())

    return Engine("podman", base, None, pid)


def runc_alone(work: Path, env: dict[str, str], base: list[str], runs: int) -> list[float]:
    """Seconds ``runc run -d`` takes on its own for the same container (its
    config.json and root, a state root and cgroup of its own, ``sleep`` for
    a command): what any detached start on runc pays, volmerge's or
    podman's, before its own work."""
    info = json.loads(check([*base, "inspect", "--json", "web"], env))[0]
    bundle = Path(env["VOLMERGE_ROOT"]) / "containers" / info["id"] / "bundle"
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"]["path"] = str(bundle / "rootfs")
    # beside the container's own, under the same parent (runc removes the leaf)
    cfg["linux"]["cgroupsPath"] = cfg["linux"]["cgroupsPath"].rsplit("/", 1)[0] + "/bench-alone"
    cfg["process"]["args"] = ["sleep", "600"]
    mine = work / "runc-alone"
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps(cfg))
    state = ["runc", "--root", str(work / "runc-alone-state")]
    out = []
    for _ in range(runs + 1):  # the first warms caches up and is not counted
        t0 = time.perf_counter()
        subprocess.run([*state, "run", "-d", "--bundle", str(mine), "alone"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
        subprocess.run([*state, "delete", "-f", "alone"], check=True)
    return out[1:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--runs", type=int, default=7)
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()

    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNS | rsys.CLONE_NEWNET)
    rsys.make_private("/")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from bench_startup import compile_bytecode

    from volmerge.fixtures.images import REFS, image_archive

    compile_bytecode()
    archive = image_archive("busybox")
    ref = REFS["busybox"]
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    engines: list[tuple[Engine, int]] = []
    load0 = os.getloadavg()[0]  # printed with the figures: the machine is shared
    try:
        engines.append((setup_volmerge(work, archive, ref, 18080), 18080))
        if not args.no_podman and shutil.which("podman"):
            engines.append((setup_podman(work, archive, ref, 18081), 18081))
        res: dict[str, dict[str, list[float]]] = {
            e.name: {"stop": [], "stop total": [], "start": [], "restart": []} for e, _ in engines}
        for i in range(args.runs + 1):  # round 0 warms caches up and is not counted
            for eng, port in engines:
                wait_answers(port)
                lat, total = stop_latency(eng, "web")
                start = eng.timed("start", "web")
                wait_answers(port)
                gap = unreachable(eng, "web", port)
                if i:
                    r = res[eng.name]
                    r["stop"].append(lat)
                    r["stop total"].append(total)
                    r["start"].append(start)
                    r["restart"].append(gap)
        print(f"detached lifecycle of a busybox httpd (PID 1 exits on SIGTERM), cold commands,"
              f" median of {args.runs} interleaved rounds (min-max); load average"
              f" {load0:.1f} before, {os.getloadavg()[0]:.1f} after on {os.cpu_count()} cores:")
        for name, r in res.items():
            for what, label in (("stop", "stop, PID 1 exit -> return"),
                                ("stop total", "stop, whole command"),
                                ("start", "start -d until running"),
                                ("restart", "restart, unreachable")):
                s = r[what]
                print(f"  {name:9s} {label:30s} {median_ms(s):7.1f} ms"
                      f"   ({min(s) * 1000:.1f}-{max(s) * 1000:.1f})")
        vm_eng = engines[0][0]
        alone = runc_alone(work, vm_eng.env or {}, vm_eng.base, args.runs)
        print(f"  {'runc':9s} {'run -d alone, same bundle':30s} {median_ms(alone):7.1f} ms"
              f"   ({min(alone) * 1000:.1f}-{max(alone) * 1000:.1f})")
        vm = res["volmerge"]
        met = True
        stop_ms = median_ms(vm["stop"])
        ok = stop_ms <= GOAL_STOP_MS
        met &= ok
        print(f"stop: {stop_ms:.1f} ms after PID 1 exits (goal <= {GOAL_STOP_MS:g} ms:"
              f" {'met' if ok else 'not met'})")
        if "podman" in res:
            pm = res["podman"]
            ratio = median_ms(vm["start"]) / median_ms(pm["start"])
            ok = ratio <= GOAL_START
            met &= ok
            print(f"start: volmerge / podman = {ratio:.2f}x [{per_round(vm['start'], pm['start']):.2f}x]"
                  f" (goal <= {GOAL_START:g}x: {'met' if ok else 'not met'}; in brackets the median"
                  f" of the ratios within one round, steadier when the load drifts)")
            print(f"stop after exit: volmerge / podman ="
                  f" {median_ms(vm['stop']) / median_ms(pm['stop']):.2f}x;"
                  f" restart unreachable: volmerge / podman ="
                  f" {median_ms(vm['restart']) / median_ms(pm['restart']):.2f}x")
        print("lifecycle goals: " + ("met" if met else "not met"))
        return 0
    finally:
        for eng, _ in engines:
            subprocess.run(eng.cmd("rm", "-f", "web"), env=eng.env, capture_output=True)
        # conmon outlives `podman rm` a little and writes below the store as it exits
        from tests.procs import processes_whose

        deadline = time.monotonic() + 10
        while processes_whose("cmdline", str(work).encode()) and time.monotonic() < deadline:
            time.sleep(0.05)
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
