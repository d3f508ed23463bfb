"""Downtime of an upgrade of the demo app: ``volmerge upgrade`` (and its
automatic rollback of a broken release, and ``volmerge rollback``) against the
manual path an operator takes with a docker-like CLI: stop, tar the volume,
start the new image, and restore from the tar when the new version fails.

Run as root: ``.venv/bin/python bench/bench_upgrade.py [-n ROUNDS] [--notes N[,N...]]
[--sides floor,floor-podman,volmerge,volmerge-sa,manual,manual-cli,manual-podman]
[--scenarios upgrade,failed,back,naive] [--json FILE]``.

The script re-executes itself under ``unshare --net --mount --propagation
private`` so that the bridge, the published port, the nft table and every
mount live in namespaces of its own; the store root is a temporary directory
that is unmounted and removed at the end.  The only traffic is the poller's
HTTP on 127.0.0.1 inside that network namespace.

Each round starts each side from the same fresh state (notes v1 with N notes
and an operator's settings edit) and runs three scenarios per side:

  upgrade   v1 -> v2 (the schema changes: the data must be carried over)
  failed    v2 -> v3 (v3 fails its health check): back on v2 with the data
  back      v2 -> v1 (return to the previous version, dropping newer data)

The floor is the demo app's own restart: the same container (v1, same data)
stopped and started again through the library in one warm process; an
upgrade replaces the process, so it cannot have less downtime than that
without keeping the socket open.

The ``volmerge-sa`` side is volmerge's with the app started by ``run
--socket-activate`` instead of ``-p``: the listening socket stays open
across the switch, so a client's connection waits instead of being
refused; its **wait** column is the longest time one answered request took.

The podman sides are the same container with podman 4 (CNI bridge, ``-p``),
each step one ``podman`` command as an operator types it: ``floor-podman``
its own ``podman stop`` + ``podman start``, ``manual-podman`` the manual
path (``podman stop``, ``podman volume export``, the migration in ``podman
run --rm``, ``podman rm``, ``podman run -d``, then /health polled).  podman
gets a store, configuration and CNI state of its own (bench/podman_store.py).

A client thread polls GET /health every 5 ms; downtime is the longest gap
between two successful (HTTP 200) answers; refused counts the connections
refused meanwhile, failed every try without a 200, wait the slowest
answered try.  Sides alternate which goes first.  The goals of issue 19
are printed: the upgrade's downtime at most the floor + 50 ms and at most
0.5 x the manual path's; with socket activation, no refused connection.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

INNER = "VOLMERGE_BENCH_UPGRADE_INNER"
DEMO = {1: "localhost/volmerge-demo/notes:1", 2: "localhost/volmerge-demo/notes:2",
        3: "localhost/volmerge-demo/notes:3"}
NAME, VOL, PORT = "notes", "notes-data", 18080
HEALTH_TIMEOUT = 5.0  # both sides give the broken release the same 5 s
# the share of upgrades whose volume was merged before the stop (not busy)
STAGED = "staged (share of runs)"
COPIED = "staged from a copy (share of runs)"  # the volume too busy to snapshot
SHARES = (STAGED, COPIED)

# v1 -> v2 schema change, written by hand as an operator would (the manual
# side's migration; volmerge derives it from the two schemas instead).
MIGRATE = """\
import sqlite3
c = sqlite3.connect('/data/notes.db')
c.executescript('''
BEGIN;
ALTER TABLE notes RENAME COLUMN body TO content;
ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
CREATE TABLE tags (id INTEGER PRIMARY KEY,
  note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE, name TEXT NOT NULL);
PRAGMA user_version = 2;
COMMIT;
''')
c.close()
"""

FILL = """\
import sqlite3, sys
n = int(sys.argv[1])
c = sqlite3.connect('/data/notes.db', timeout=10)
with c:
    c.executemany('INSERT INTO notes (body, created) VALUES (?, ?)',
                  [(f'note {i}: ' + 'lorem ipsum dolor sit amet ' * 4, '2024-01-01T00:00:00Z')
                   for i in range(n)])
c.close()
"""


# --------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------


def reexec_in_namespaces() -> None:
    """Start over inside a new network namespace and a private mount namespace."""
    if os.environ.get(INNER) == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_upgrade: run as root (namespaces, overlay mounts, runc)")
    env = dict(os.environ, **{INNER: "1"})
    os.execvpe("unshare", ["unshare", "--net", "--mount", "--propagation", "private", "--",
                           sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


# --------------------------------------------------------------------------
# The CLI and the poller
# --------------------------------------------------------------------------


class Fail(RuntimeError):
    pass


@dataclass
class VM:
    root: Path

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, VOLMERGE_ROOT=str(self.root))
        p = subprocess.run([sys.executable, "-m", "volmerge", *args], capture_output=True,
                           text=True, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise Fail(f"volmerge {' '.join(args)} -> {p.returncode}: {p.stderr.strip()[-800:]}")
        return p


REFUSED, TIMEOUT, BROKEN = -1, 0, -2  # probe() results that are no HTTP answer


def probe(path: str = "/health") -> int:
    """HTTP status of one GET on a new connection; else REFUSED (the
    connection was refused or reset: nothing listened), TIMEOUT (no answer
    in time: while no container is behind the DNAT the SYN vanishes; a short
    25 ms connect timeout) or BROKEN (connected, then no HTTP answer)."""
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=0.025)
    except (ConnectionRefusedError, ConnectionResetError):
        return REFUSED
    except OSError:
        return TIMEOUT
    try:
        s.settimeout(2.0)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        parts = data.split(b" ", 2)
        return int(parts[1]) if data.startswith(b"HTTP/") and len(parts) > 1 else BROKEN
    except (ConnectionRefusedError, ConnectionResetError):
        return REFUSED
    except (OSError, ValueError):
        return BROKEN
    finally:
        s.close()


def get_json(path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=60) as r:
        return json.loads(r.read())


class Poller:
    """Polls /health every ``interval`` s from start() until a success after
    finish(); the downtime is the longest gap between two successes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.oks: list[float] = []
        self.tries = 0
        self.refused = 0        # connections refused (or reset) while measuring
        self.slowest = 0.0      # the longest an answered try took while measuring
        self.failed = 0         # every try without an HTTP 200 while measuring
        self._measuring = False
        self._finish_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nxt = time.perf_counter()
        while True:
            self.tries += 1
            t0 = time.perf_counter()
            code = probe()
            ok = code == 200
            now = time.perf_counter()
            if self._measuring and not ok:
                self.failed += 1
                self.refused += code == REFUSED
            if self._measuring and ok:
                self.slowest = max(self.slowest, now - t0)
            if ok:
                self.oks.append(now)
                if self._finish_at is not None and now >= self._finish_at:
                    break
            if self._done.is_set():
                break
            nxt += self.interval
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.perf_counter()

    def start(self) -> Poller:
        self._thread.start()
        deadline = time.perf_counter() + 10
        while not self.oks:  # the service must be up before we measure
            if time.perf_counter() > deadline:
                raise Fail("service not answering before the measurement")
            time.sleep(0.005)
        self._measuring = True
        return self

    def finish(self, timeout: float = 30) -> float:
        self._finish_at = time.perf_counter()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._done.set()
            self._thread.join()
            raise Fail("service did not come back")
        gaps = [b - a for a, b in zip(self.oks, self.oks[1:])]
        return max(gaps) if gaps else 0.0


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------


def run_notes(vm: VM, version: int, publish: str = "-p") -> None:
    """The demo app detached, its port published (``-p``) or held open by
    volmerge and passed in (``--socket-activate``)."""
    vm("run", "-d", "--name", NAME, publish, f"{PORT}:8080", "-v", f"{VOL}:/data", DEMO[version])


def setup(vm: VM, notes: int, publish: str = "-p") -> None:
    """Fresh state: notes v1 on a fresh volume, N notes, an operator's edit."""
    run_notes(vm, 1, publish)
    vm("wait", "--healthy", NAME, "--timeout", "30")
    fill(lambda *argv: vm("exec", NAME, *argv), notes)


def fill(exec_, notes: int) -> None:  # type: ignore[no-untyped-def]
    """N notes into the running v1 (10 through the app, the rest by
    ``exec_(*argv)`` in its container) and the operator's settings edit."""
    for i in range(10):  # a few through the app itself
        import urllib.request

        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/notes", data=f"http note {i}".encode(),
                               timeout=60).read()
    exec_("python3", "-c", FILL, str(notes - 10))
    exec_("sh", "-c", "sed -i 's/^greeting = .*/greeting = Hello from Ops/' /data/settings.ini")
    have = get_json("/notes")["count"]
    if have != notes:
        raise Fail(f"setup wrote {have} notes, wanted {notes}")


def teardown(vm: Any) -> None:
    """Every container, volume and network of the store at vm.root removed
    (also bench/soak.py's, whose VM keeps memory figures)."""
    ids = vm("ps", "-aq", check=False).stdout.split()
    if ids:
        vm("rm", "-f", *ids, check=False)
    vols = vm("volume", "ls", "-q", check=False).stdout.split()
    if vols:
        vm("volume", "rm", "-f", *vols, check=False)
    nets = vm("network", "ls", "-q", check=False).stdout.split()
    if nets:
        vm("network", "rm", *nets, check=False)


def expect(version: int, notes: int, ops_edit: bool = True) -> None:
    v = get_json("/version")["version"]
    n = get_json("/notes")["count"]
    if v != version or n != notes:
        raise Fail(f"expected v{version} with {notes} notes, found v{v} with {n}")
    if ops_edit and "Hello from Ops" not in json.dumps(get_json("/settings")):
        raise Fail("the operator's settings edit is gone")


@dataclass
class Sample:
    downtime: float
    total: float
    steps: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    failed: int = 0
    wait: float = 0.0


def measure(action) -> Sample:  # type: ignore[no-untyped-def]
    """Run ``action()`` (returns per-step timings) under the poller."""
    poller = Poller().start()
    t0 = time.perf_counter()
    try:
        steps = action()
    finally:
        total = time.perf_counter() - t0
        down = poller.finish()
    return Sample(down, total, steps, poller.refused, poller.failed, poller.slowest)


class Steps:
    """Times named steps of the manual path."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def __call__(self, label: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t0


# --------------------------------------------------------------------------
# The volmerge side
# --------------------------------------------------------------------------


def last_attempt_timings(vm: VM) -> dict[str, float]:
    hist = json.loads(vm("history", NAME, "--json").stdout)
    attempts = [h for h in hist if h["type"] != "generation"]
    return dict(attempts[-1]["timings"]) if attempts else {}


def volmerge_side(vm: VM, notes: int, scenarios: set[str]) -> dict[str, Sample]:
    out: dict[str, Sample] = {}

    def upgrade() -> dict[str, float]:
        p = vm("upgrade", NAME, "--to", DEMO[2], "--json")
        rep = json.loads(p.stdout)
        t = dict(rep["timings"])
        switch = rep["volumes"].get(VOL, {}).get("switch", {})
        how = switch.get("merge", "")
        t[STAGED] = float("whole" not in how) if how else 0.0
        t[COPIED] = float(switch.get("staged_from") == "copy")
        return t

    out["upgrade"] = measure(upgrade)
    expect(2, notes)
    if "failed" not in scenarios:
        return out

    def failed() -> dict[str, float]:
        p = vm("upgrade", NAME, "--to", DEMO[3], "--health-timeout", str(HEALTH_TIMEOUT),
               check=False)
        if p.returncode != 1 or "rolled back" not in p.stderr:
            raise Fail(f"upgrade to v3 should roll back (exit 1): {p.returncode} {p.stderr[-400:]}")
        vm("wait", "--healthy", NAME, "--timeout", "30")
        return last_attempt_timings(vm)

    out["failed"] = measure(failed)
    expect(2, notes)
    if "back" not in scenarios:
        return out

    def back() -> dict[str, float]:
        p = vm("rollback", NAME, "--discard-new-data", "--json")
        t = dict(json.loads(p.stdout).get("timings", {}))
        vm("wait", "--healthy", NAME, "--timeout", "30")
        return t

    out["back"] = measure(back)
    expect(1, notes)
    return out


# --------------------------------------------------------------------------
# The manual side: a docker-like CLI, tar backups, restore on failure
# --------------------------------------------------------------------------


class CliOps:
    """The manual path as an operator types it: one CLI command per step
    (each pays the CLI's start-up, ~200 ms for this Python CLI)."""

    def __init__(self, vm: VM) -> None:
        self.vm = vm

    def stop(self) -> None:
        self.vm("stop", NAME)

    def rm(self, force: bool = False) -> None:
        self.vm("rm", *(["-f"] if force else []), NAME)

    def export(self, tar: Path) -> None:
        self.vm("volume", "export", VOL, "-o", str(tar))

    def import_(self, tar: Path) -> None:
        self.vm("volume", "rm", "-f", VOL)
        self.vm("volume", "import", VOL, str(tar))

    def migrate(self) -> None:
        self.vm("run", "--rm", "--network", "none", "-v", f"{VOL}:/data", DEMO[2],
                "python3", "-c", MIGRATE)

    def run(self, version: int) -> None:
        run_notes(self.vm, version)

    def healthy(self, timeout: float) -> bool:
        return self.vm("wait", "--healthy", NAME, "--timeout", str(timeout),
                       check=False).returncode == 0


class LibOps:
    """The same steps through volmerge's library in one warm process: the
    manual path's best case (no per-command start-up, as with a compiled
    CLI talking to a daemon, or a script on top of the library)."""

    def __init__(self, root: Path) -> None:
        from volmerge.context import Context
        from volmerge.runtime import options as o
        from volmerge.runtime.store import Store

        self.o = o
        self.ctx = Context(Store(root))
        self.eng, self.vols = self.ctx.engine, self.ctx.volumes
        self.eng.get(NAME)  # warm: database, imports
        import volmerge.runtime.health  # noqa: F401
        import volmerge.volumes.export  # noqa: F401

        # what a start imports (the netlink library alone ~100-230 ms): as warm
        # as volmerge upgrade, which imports it before its switch
        from volmerge.upgrade.staging import warm

        warm()

    def _opts(self, image: str, **kw):  # type: ignore[no-untyped-def]
        return self.o.RunOptions(image=image, mounts=[self.o.parse_volume(f"{VOL}:/data")], **kw)

    def stop(self) -> None:
        self.eng.stop(NAME, 10)

    def start_again(self) -> None:
        self.eng.start(NAME)

    def rm(self, force: bool = False) -> None:
        self.eng.remove(NAME, force=force)

    def export(self, tar: Path) -> None:
        self.vols.export(VOL, str(tar))

    def import_(self, tar: Path) -> None:
        self.vols.remove(VOL, force=True)
        self.vols.import_(VOL, str(tar))

    def migrate(self) -> None:
        code = self.eng.run(self._opts(DEMO[2], command=["python3", "-c", MIGRATE],
                                       network="none", rm=True))
        if code != 0:
            raise Fail(f"migration exited {code}")

    def run(self, version: int) -> None:
        opts = self._opts(DEMO[version], name=NAME, detach=True,
                          ports=[self.o.parse_port(f"{PORT}:8080")])
        c = self.eng.create(opts)
        self.eng.start(c.id)

    def healthy(self, timeout: float) -> bool:
        from volmerge.runtime.errors import NotDone

        try:
            self.eng.wait(NAME, healthy=True, timeout=timeout)
            return True
        except NotDone:
            return False


class PodmanOps:
    """The manual path with podman as an operator types it: one ``podman``
    command per step, each a fresh process.  The images are OCI images, in
    which podman 4 sees no HEALTHCHECK (``podman healthcheck run`` has
    nothing to run), so the health is waited for as an operator's ``until
    curl -fs .../health`` loop would: GET /health every 5 ms from this
    process (no curl start per try).  Unhealthy as the image's HEALTHCHECK
    has it under volmerge (``retries`` 3, tried 0.25 s apart while
    starting): three error answers in a row 0.25 s apart; or the container
    no longer runs (a ``podman inspect`` every 0.25 s after the first 0.5 s
    without an answer, as an operator glances at ``podman ps``)."""

    def __init__(self, pm) -> None:  # type: ignore[no-untyped-def]
        from podman_store import RUN_OPTS

        self.pm, self.run_opts = pm, RUN_OPTS

    def stop(self) -> None:
        self.pm("stop", NAME)

    def start_again(self) -> None:
        self.pm("start", NAME)

    def rm(self, force: bool = False) -> None:
        self.pm("rm", *(["-f"] if force else []), NAME)

    def export(self, tar: Path) -> None:
        self.pm("volume", "export", VOL, "-o", str(tar))

    def import_(self, tar: Path) -> None:
        self.pm("volume", "rm", "-f", VOL)
        self.pm("volume", "create", VOL)  # podman 4 imports into an existing volume only
        self.pm("volume", "import", VOL, str(tar))

    def migrate(self) -> None:
        self.pm("run", "--rm", "--network", "none", *self.run_opts, "-v", f"{VOL}:/data",
                DEMO[2], "python3", "-c", MIGRATE)

    def run(self, version: int) -> None:
        self.pm("run", "-d", "--name", NAME, "-p", f"{PORT}:8080", *self.run_opts,
                "-v", f"{VOL}:/data", DEMO[version])

    def exec(self, *argv: str) -> None:
        self.pm("exec", NAME, *argv)

    def healthy(self, timeout: float) -> bool:
        now = time.perf_counter()
        deadline, look, streak, next_count = now + timeout, now + 0.5, 0, now
        while now < deadline:
            code = probe()
            now = time.perf_counter()
            if code == 200:
                return True
            if code > 0 and now >= next_count:  # an answer, not 200
                streak, next_count = streak + 1, now + 0.25
                if streak >= 3:
                    return False
            if code <= 0 and now >= look:
                state = self.pm("inspect", "--format", "{{.State.Running}}", NAME, check=False)
                if state.stdout.strip() != "true":
                    return False
                look = time.perf_counter() + 0.25
            time.sleep(0.005)
            now = time.perf_counter()
        return False


def restore(ops, s: Steps, tar: Path, version: int) -> None:  # type: ignore[no-untyped-def]
    """Failure path: throw the container and the volume away, restore the
    tar into a new volume, start the known-good version again."""
    s("rm", ops.rm, force=True)
    s("restore tar", ops.import_, tar)
    s("start old", ops.run, version)
    if not s("health old", ops.healthy, 30):
        raise Fail(f"v{version} unhealthy after the restore")


def floor(ops) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The demo app's own restart, the floor of any upgrade that replaces
    its process: the same container (same image, same data) stopped and
    started again, then its health check."""
    s = Steps()
    s("stop", ops.stop)
    s("start", ops.start_again)
    if not s("health", ops.healthy, 30):
        raise Fail("unhealthy after its own restart")
    return s.t


def manual(ops, scenario: str, work: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """One scenario of the manual path; returns its step timings."""
    bk = {"naive": work / "before-naive.tar", "upgrade": work / "before-v2.tar",
          "failed": work / "before-v3.tar"}
    s = Steps()
    if scenario == "back":  # the backup taken before the upgrade is the way back
        s("stop", ops.stop)
        restore(ops, s, bk["upgrade"], 1)
        return s.t
    s("stop", ops.stop)
    s("tar backup", ops.export, bk[scenario])
    if scenario == "upgrade":
        s("migrate", ops.migrate)
    s("rm", ops.rm)
    new = {"naive": 2, "upgrade": 2, "failed": 3}[scenario]
    s("start", ops.run, new)
    ok = s("health", ops.healthy, 30 if scenario == "upgrade" else HEALTH_TIMEOUT)
    if scenario == "upgrade":
        if not ok:
            raise Fail("v2 unhealthy after the manual migration")
        return s.t
    if ok:
        raise Fail(f"v{new} passed its health check in scenario {scenario}")
    restore(ops, s, bk[scenario], 1 if scenario == "naive" else 2)
    return s.t


MANUAL_ORDER = (("naive", 1), ("upgrade", 2), ("failed", 2), ("back", 1))


def in_worker(vm: VM, scenario: str, work: Path) -> dict[str, float]:
    """``scenario`` in a fresh process of this script (--worker), started
    before the poller measures, as `volmerge upgrade` is."""
    env = dict(os.environ, VOLMERGE_ROOT=str(vm.root))
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", scenario,
                        "--work", str(work)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise Fail(f"worker {scenario}: {p.stderr[-800:]}")
    return dict(json.loads(p.stdout))


def floor_side(act, notes: int) -> dict[str, Sample]:  # type: ignore[no-untyped-def]
    """The floor: ``act()`` (the app's own stop + start) measured."""
    out = {"restart": measure(act)}
    expect(1, notes)
    return out


def manual_side(act, notes: int, work: Path,  # type: ignore[no-untyped-def]
                scenarios: set[str]) -> dict[str, Sample]:
    """The manual scenarios in order, each ``act(scenario)`` measured."""
    out: dict[str, Sample] = {}
    for scenario, after in MANUAL_ORDER:
        if scenario not in scenarios:
            continue
        out[scenario] = measure(lambda sc=scenario: act(sc))
        expect(after, notes)
    for f in work.glob("before-*.tar"):
        f.unlink()
    return out


def podman_side(pm, side: str, notes: int, work: Path,  # type: ignore[no-untyped-def]
                scenarios: set[str]) -> dict[str, Sample]:
    """``floor-podman`` or ``manual-podman`` from the same fresh state as
    the other sides, on podman's store ``pm`` (emptied after)."""
    ops = PodmanOps(pm)
    try:
        ops.run(1)
        if not ops.healthy(30):
            raise Fail("v1 unhealthy under podman")
        fill(ops.exec, notes)
        if side == "floor-podman":
            return floor_side(lambda: floor(ops), notes)
        return manual_side(lambda sc: manual(ops, sc, work), notes, work, scenarios)
    finally:
        pm.clear()


def worker(scenario: str, work: Path) -> None:
    ops = LibOps(Path(os.environ["VOLMERGE_ROOT"]))
    print(json.dumps(floor(ops) if scenario == "restart" else manual(ops, scenario, work)))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

SCENARIOS = {
    "restart": "floor only: the demo app's own stop + start (v1, same data, same container)",
    "upgrade": "v1 -> v2, data carried into the new schema",
    "failed": f"v2 -> v3 (fails health, {HEALTH_TIMEOUT:g} s timeout), back on v2",
    "back": "v2 -> v1, newer data dropped",
    "naive": "manual only: v1 -> v2 without migration, refused, restore v1",
}


def med(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


SIDES = {
    "floor": "the app's own restart: stop + start of the same container through the library "
             "in one warm process",
    "volmerge": "volmerge upgrade / its automatic rollback / volmerge rollback (one CLI call each)",
    "volmerge-sa": "the same, the app started with --socket-activate (its socket stays open)",
    "manual": "manual path through the library in one warm process (no per-command start-up)",
    "manual-cli": "manual path as typed: one volmerge CLI command per step",
    "floor-podman": "the app's own restart with podman: `podman stop` + `podman start` of the "
                    "same container, then /health polled",
    "manual-podman": "manual path with podman as typed: one podman command per step "
                     "(stop, volume export, run --rm migration, rm, run -d), /health polled",
}
PODMAN = ("floor-podman", "manual-podman")
GOAL_OVER_FLOOR_MS = 50.0   # issue 19: downtime <= the floor + 50 ms
GOAL_OF_MANUAL = 0.5        # ... and <= 0.5 x the manual path
MANUAL = ("manual", "manual-cli", "manual-podman")  # the sides the ratios compare with volmerge's


def report(results: dict[str, list[dict[str, Sample]]], notes: int, rounds: int) -> dict:
    print(f"\nDemo app, {notes} notes, {rounds} rounds per side, medians (ms); downtime = "
          "longest gap between two 200 answers of GET /health polled every 5 ms; refused = "
          "connections refused, failed = tries without a 200 (medians per run)\n")
    hdr = (f"{'scenario':<9} {'side':<13} {'downtime':>9} {'command':>9} {'min-max downtime':>17}"
           f" {'refused':>8} {'failed':>7} {'wait':>6} {'x downtime':>11} {'x command':>10}")
    print(hdr)
    print("-" * len(hdr))
    summary: dict = {}
    for key in SCENARIOS:
        row: dict = {}
        for side in SIDES:
            xs = [r[key] for r in results.get(side, []) if key in r]
            if not xs:
                continue
            d = [x.downtime for x in xs]
            r = row[side] = {
                "downtime_ms": med(d), "total_ms": med([x.total for x in xs]),
                "min_ms": min(d) * 1000, "max_ms": max(d) * 1000,
                "refused": statistics.median([x.refused for x in xs]),
                "failed": statistics.median([x.failed for x in xs]),
                "wait_ms": med([x.wait for x in xs]),
                "steps_ms": {k: (statistics.mean if k in SHARES else med)(
                    [x.steps.get(k, 0.0) for x in xs]) for k in xs[0].steps}}
            ratio = ""
            if side in MANUAL and "volmerge" in row:
                v = row["volmerge"]
                r["ratio_downtime"] = r["downtime_ms"] / v["downtime_ms"]
                r["ratio_total"] = r["total_ms"] / v["total_ms"]
                ratio = f"{r['ratio_downtime']:>10.2f}x {r['ratio_total']:>9.2f}x"
            mm = f"{r['min_ms']:.0f}-{r['max_ms']:.0f}"
            print(f"{key:<9} {side:<13} {r['downtime_ms']:>9.0f} {r['total_ms']:>9.0f} {mm:>17}"
                  f" {r['refused']:>8g} {r['failed']:>7g} {r['wait_ms']:>6.0f} {ratio}")
        if row:
            summary[key] = row
    print("\n(x: the manual side / volmerge, > 1 means volmerge is faster)")
    goals = _goals(summary)
    if goals:
        summary["goals"] = goals
        print(f"\nGoals (issue 19), upgrade: volmerge {goals['volmerge_ms']:.0f} ms; floor "
              f"{goals['floor_ms']:.0f} ms -> over the floor {goals['over_floor_ms']:+.0f} ms "
              f"(goal <= +{GOAL_OVER_FLOOR_MS:.0f}: {'met' if goals['floor_met'] else 'NOT met'});"
              f" manual {goals['manual_ms']:.0f} ms -> {goals['of_manual']:.2f} x manual "
              f"(goal <= {GOAL_OF_MANUAL}: {'met' if goals['manual_met'] else 'NOT met'})")
    pod = _podman(summary)
    if pod:
        summary["podman"] = pod
        print(_podman_line(pod))
    sa = summary.get("upgrade", {}).get("volmerge-sa")
    if sa:
        summary.setdefault("goals", {})["socket_activated_refused"] = sa["refused"]
        print(f"With socket activation: refused {sa['refused']:g} (goal 0: "
              f"{'met' if sa['refused'] == 0 else 'NOT met'}), failed {sa['failed']:g}; the"
              f" longest answered request took {sa['wait_ms']:.0f} ms, downtime"
              f" {sa['downtime_ms']:.0f} ms")
    print("\nScenarios:")
    for k, v in SCENARIOS.items():
        print(f"  {k:<8} {v}")
    print("Sides:")
    for k, v in SIDES.items():
        print(f"  {k:<13} {v}")
    print("\nPer-step medians (ms):")
    for key, row in summary.items():
        for side in SIDES:
            if side in row:
                steps = ", ".join(f"{k} {v:.2f}" if k in SHARES else f"{k} {v:.0f}"
                                  for k, v in row[side]["steps_ms"].items())
                print(f"  {key:<8} {side:<13} {steps}")
    return summary


def _goals(summary: dict) -> dict:
    """The upgrade's downtime against the floor and the manual path."""
    up, fl = summary.get("upgrade", {}), summary.get("restart", {})
    if "volmerge" not in up or "manual" not in up or "floor" not in fl:
        return {}
    v, f, m = (up["volmerge"]["downtime_ms"], fl["floor"]["downtime_ms"],
               up["manual"]["downtime_ms"])
    return {"volmerge_ms": v, "floor_ms": f, "manual_ms": m, "over_floor_ms": v - f,
            "of_manual": v / m, "floor_met": v - f <= GOAL_OVER_FLOOR_MS,
            "manual_met": v / m <= GOAL_OF_MANUAL}


def _podman(summary: dict) -> dict:
    """volmerge's upgrade downtime against podman's manual path, and the
    two floors (the app's own restart) side by side; what the run has."""
    up, fl = summary.get("upgrade", {}), summary.get("restart", {})
    out: dict = {}
    if "volmerge" in up and "manual-podman" in up:
        v, p = up["volmerge"]["downtime_ms"], up["manual-podman"]["downtime_ms"]
        out.update(volmerge_ms=v, manual_podman_ms=p, of_manual_podman=v / p)
    if "floor-podman" in fl:
        out["floor_podman_ms"] = fl["floor-podman"]["downtime_ms"]
        if "floor" in fl:
            out["floor_ms"] = fl["floor"]["downtime_ms"]
            out["floor_podman_of_floor"] = out["floor_podman_ms"] / out["floor_ms"]
    return out


def _podman_line(pod: dict) -> str:
    """The comparison with podman, apart from the goals (which are against `manual`)."""
    parts = []
    if "of_manual_podman" in pod:
        parts.append(f"upgrade: volmerge {pod['volmerge_ms']:.0f} ms, manual-podman "
                     f"{pod['manual_podman_ms']:.0f} ms -> volmerge = "
                     f"{pod['of_manual_podman']:.2f} x manual-podman")
    if "floor_podman_ms" in pod:
        floor = f"podman's own restart (floor-podman) {pod['floor_podman_ms']:.0f} ms"
        if "floor_ms" in pod:
            floor += (f", volmerge's (floor) {pod['floor_ms']:.0f} ms -> "
                      f"{pod['floor_podman_of_floor']:.2f} x")
        parts.append(floor)
    return "\nAgainst podman's manual path (no goal): " + "; ".join(parts)


# --------------------------------------------------------------------------


def cli_floor(vm: VM, n: int = 5) -> float:
    """Median wall time of a trivial CLI call (Python start + imports):
    the fixed cost each manual step pays once per command."""
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        vm("ps", "-q")
        xs.append(time.perf_counter() - t0)
    return statistics.median(xs)


def run_side(vm: VM, side: str, notes: int, work: Path, scenarios: set[str],
             pm: Any = None) -> dict[str, Sample]:
    if side in PODMAN:
        return podman_side(pm, side, notes, work, scenarios)
    setup(vm, notes, "--socket-activate" if side == "volmerge-sa" else "-p")
    try:
        if side == "floor":
            return floor_side(lambda: in_worker(vm, "restart", work), notes)
        if side in ("volmerge", "volmerge-sa"):
            return volmerge_side(vm, notes, scenarios)
        if side == "manual":  # each scenario in a fresh process, started before the poller
            return manual_side(lambda sc: in_worker(vm, sc, work), notes, work, scenarios)
        return manual_side(lambda sc: manual(CliOps(vm), sc, work), notes, work, scenarios)
    finally:
        teardown(vm)


def bench(vm: VM, notes: int, rounds: int, sides: list[str], work: Path,
          scenarios: set[str], pm: Any = None) -> dict:
    results: dict[str, list[dict[str, Sample]]] = {k: [] for k in sides}
    for i in range(rounds):
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:  # rotate who goes first
            r = run_side(vm, side, notes, work, scenarios, pm)
            results[side].append(r)
            print(f"{notes} notes, round {i + 1} {side:<13} " + ", ".join(
                f"{k} {s.downtime * 1000:.0f}/{s.total * 1000:.0f} ms, refused {s.refused},"
                f" wait {s.wait * 1000:.0f} ms"
                for k, s in r.items()), flush=True)
    return report(results, notes, rounds)


def open_podman(work: Path, archives: list[Path]):  # type: ignore[no-untyped-def]
    """podman's own store below ``work`` with the demo images loaded:
    overlay, or vfs when overlay does not work here (printed)."""
    from podman_store import RUN_OPTS, PodmanError, PodmanStore

    if not shutil.which("podman"):
        raise SystemExit("bench_upgrade: the podman sides need podman (Makefile DEB_PACKAGES)")
    for driver in ("overlay", "vfs"):
        pm = PodmanStore(work / f"podman-{driver}", driver)
        try:
            t0 = time.perf_counter()
            for a in archives:
                pm("load", "-i", str(a))
            pm("run", "--rm", "--network", "none", *RUN_OPTS, DEMO[1], "true")
        except PodmanError as e:
            pm.close()
            print(f"podman: storage driver {driver} fails here ({e}); trying the next", flush=True)
            continue
        except BaseException:
            pm.close()
            raise
        pm.version = pm("version", "--format", "{{.Client.Version}}").stdout.strip()
        print(f"podman {pm.version}: images loaded in {time.perf_counter() - t0:.1f} s; storage "
              f"driver {driver}; network a CNI bridge, -p {PORT}:8080", flush=True)
        return pm
    raise Fail("podman works with neither the overlay nor the vfs storage driver")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--rounds", type=int, default=5, help="rounds per side (>= 3)")
    ap.add_argument("--notes", default="2000",
                    help="notes in the database; several, comma-separated, run one after another")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help=f"comma-separated, of {', '.join(SIDES)}")
    ap.add_argument("--scenarios", default="upgrade,failed,back,naive",
                    help="comma-separated, of upgrade, failed, back, naive (upgrade always runs)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.work))
        return
    try:
        counts = [int(x) for x in args.notes.split(",")]
    except ValueError:
        raise SystemExit("bench_upgrade: --notes takes numbers, comma-separated") from None
    sides = [x for x in args.sides.split(",") if x]
    scenarios = {x for x in args.scenarios.split(",") if x} | {"upgrade"}
    if args.rounds < 3 or min(counts) < 10:
        raise SystemExit("bench_upgrade: --rounds >= 3 and --notes >= 10")
    if not set(sides) <= set(SIDES) or not scenarios <= set(SCENARIOS) - {"restart"}:
        raise SystemExit("bench_upgrade: unknown side or scenario")
    reexec_in_namespaces()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    from volmerge.fixtures import image_archive
    from volmerge.runtime import sys as rsys

    work = Path(tempfile.mkdtemp(prefix="bench-upgrade-"))
    vm = VM(work / "root")
    pm = None
    try:
        t0 = time.perf_counter()
        archives = [image_archive(kind) for kind in ("demo-v1", "demo-v2", "demo-v3")]
        for a in archives:
            vm("image", "load", str(a))
        print(f"images loaded in {time.perf_counter() - t0:.1f} s; store {vm.root}", flush=True)
        out: dict = {"rounds": args.rounds, "by_notes": {}}
        if set(sides) & set(PODMAN):
            pm = open_podman(work, archives)
            out["podman"] = {"version": pm.version, "storage_driver": pm.driver,
                             "network": "CNI bridge, -p 18080:8080"}
        call = cli_floor(vm)
        load = os.getloadavg()
        out.update(cli_call_ms=call * 1000, loadavg_start=load)
        for n in counts:
            out["by_notes"][str(n)] = bench(vm, n, args.rounds, sides, work, scenarios, pm)
        out["loadavg_end"] = os.getloadavg()
        print(f"\nOne trivial volmerge CLI call (`volmerge ps -q`): {call * 1000:.0f} ms "
              "(manual-cli pays it once per command)")
        print(f"Load average (1, 5, 15 min) at the start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
              f", at the end {out['loadavg_end'][0]:.1f} {out['loadavg_end'][1]:.1f} "
              f"{out['loadavg_end'][2]:.1f} (2 cores shared with other work)")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    finally:
        if pm is not None:
            pm.close()
        teardown(vm)
        nets = vm("network", "ls", "-q", check=False).stdout.split()
        if nets:
            vm("network", "rm", *nets, check=False)
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
