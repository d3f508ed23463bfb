"""Soak: N cycles of rehearsal, upgrade and rollback of the demo app while a
client writes notes, then a check that nothing leaked and nothing grew.

Run as root: ``.venv/bin/python bench/soak.py [--cycles N] [--json FILE]``
(default 200 cycles; each takes a few seconds).

The script re-executes itself under ``unshare --net --mount --pid --fork
--mount-proc --propagation private``: the bridge, the published port, the nft
table, every mount and every process live in namespaces of its own, so the
counts below are this run's alone.  The store root is a temporary directory,
unmounted and removed at the end.  The only traffic is the client's HTTP on
127.0.0.1 inside that network namespace.

One cycle, notes v1 serving on a published port, a client thread POSTing a
note every 20 ms throughout:

  upgrade --rehearse --to notes:2     (clones, an isolated copy, thrown away)
  upgrade --to notes:2                (schema change carried over)
  rollback --discard-new-data         (back to notes:1, O(1))

After the first cycle and after the last: the app is stopped, ``volume
compact`` and ``volmerge prune --keep 2`` run, the app is started again; then
the store's size (``du``, less the volumes and the containers' logs: the
client's notes and the app's log of them are data meant to stay; the volume
layers are counted instead; and less the state database's free pages, where
the journals prune deleted were: SQLite reuses them), the mounts, the
processes, this process's open file descriptors, the network interfaces,
the nft rules and the layers (image layers, volume layers, containers) are
counted; the two counts must match (size within ``--margin``).  Every
volmerge command runs as a child whose peak resident memory (``wait4``'s
``ru_maxrss``) is kept per command: first, last and max are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

INNER = "VOLMERGE_SOAK_INNER"
DEMO = {1: "localhost/volmerge-demo/notes:1", 2: "localhost/volmerge-demo/notes:2"}
NAME, VOL, PORT = "notes", "notes-data", 18080


def reexec_in_namespaces() -> None:
    """Start over in namespaces of our own.  Inside, this process is pid 1 of
    the new pid namespace: it forks the soak and reaps every orphan (the
    background layer reapers of the CLI) until the soak ends, so that no
    zombie counts as a leaked process."""
    if os.environ.get(INNER) == "1":
        if os.getpid() == 1:
            pid = os.fork()
            if pid:
                while True:
                    done, status = os.wait()
                    if done == pid:
                        os._exit(os.waitstatus_to_exitcode(status))
        return
    if os.geteuid() != 0:
        raise SystemExit("soak: run as root (namespaces, overlay mounts, runc)")
    env = dict(os.environ, **{INNER: "1"})
    os.execvpe("unshare", ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
                           "--propagation", "private", "--",
                           sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


class Fail(RuntimeError):
    pass


@dataclass
class VM:
    """The CLI against the soak's store; each call's peak RSS (KiB) is kept
    under the command's name."""

    root: Path
    rss: dict[str, list[int]] = field(default_factory=dict)
    sizes: list[dict[str, int]] = field(default_factory=list)

    def __call__(self, *args: str, check: bool = True, label: str | None = None
                 ) -> subprocess.CompletedProcess:
        env = dict(os.environ, VOLMERGE_ROOT=str(self.root))
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen([sys.executable, "-m", "volmerge", *args], stdout=out,
                                 stderr=err, env=env)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        self.rss.setdefault(label or args[0], []).append(ru.ru_maxrss)
        if check and p.returncode != 0:
            raise Fail(f"volmerge {' '.join(args)} -> {p.returncode}: {stderr.strip()[-800:]}")
        return subprocess.CompletedProcess(args, p.returncode, stdout, stderr)


class Client:
    """POSTs a note every ``interval`` s until stopped; counts answers."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/notes",
                                            data=f"soak note {i}".encode(), timeout=2) as r:
                    r.read()
                self.ok += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1  # the service is down during a stop/start: expected
            self._stop.wait(self.interval)

    def start(self) -> Client:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# -- what is counted -----------------------------------------------------------

def du(path: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", "-x", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def nft_rules() -> int:
    p = subprocess.run(["nft", "-a", "list", "ruleset"], capture_output=True, text=True)
    return sum(1 for ln in p.stdout.splitlines() if "# handle" in ln
               and not ln.strip().startswith(("table", "chain", "set", "map")))


def entries(path: Path) -> int:
    try:
        return sum(1 for e in os.listdir(path) if not e.startswith(("~", "_", ".")))
    except FileNotFoundError:
        return 0


def fds() -> int:
    """This process's open descriptors, but the client's sockets (one may be
    in flight at any instant)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def counts(root: Path) -> dict[str, int]:
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for _ in f)
    return {
        "mounts": mounts,
        "processes": sum(1 for e in os.listdir("/proc") if e.isdigit()),
        "fds": fds(),
        "interfaces": len(os.listdir("/sys/class/net")),
        "nft rules": nft_rules(),
        "image layers": entries(root / "layers"),
        "volume layers": entries(root / "volumes" / "_layers"),
        "containers": entries(root / "containers"),
        "volumes": entries(root / "volumes"),
        "lock files": entries(root / "locks"),
    }


def breakdown(root: Path) -> dict[str, int]:
    """Bytes per entry of the store root, and per file of a container's
    directory (its logs), to say where a difference lies."""
    out = {}
    for e in sorted(os.listdir(root)):
        out[e] = du(root / e)
    for c in (root / "containers").iterdir() if (root / "containers").is_dir() else ():
        for f in c.iterdir():
            if f.is_file():
                out[f"containers/*/{f.name}"] = out.get(f"containers/*/{f.name}", 0) + \
                    f.stat().st_blocks * 512
    for f in os.listdir(root / "locks"):
        out[f"locks/{f}"] = 1
    import sqlite3

    db = sqlite3.connect(f"file:{root / 'state.db'}?mode=ro", uri=True)
    try:
        for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            out[f"state.db rows: {t}"] = db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        out["state.db free pages"] = db.execute("PRAGMA freelist_count").fetchone()[0]
        out["state.db free bytes"] = out["state.db free pages"] * \
            db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    return out


def settle(vm: VM) -> tuple[int, dict[str, int]]:
    """Compact and prune with the app stopped (a running overlay keeps the
    layers it stacks until it is mounted again), start it, let the
    background reaper finish, then count."""
    vm("stop", NAME)
    vm("volume", "compact", VOL)
    vm("prune", "--keep", "2")
    vm("start", NAME)
    vm("wait", "--healthy", NAME, "--timeout", "30")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # dropped layers are reaped in the background
        if not any(e.startswith("~") for e in os.listdir(vm.root / "volumes" / "_layers")):
            break
        time.sleep(0.1)
    b = breakdown(vm.root)
    vm.sizes.append(b)
    data = b.get("volumes", 0) + b.get("containers/*/log", 0) + b.get("state.db free bytes", 0)
    return du(vm.root) - data, counts(vm.root)


# -- one cycle -----------------------------------------------------------------

def cycle(vm: VM) -> None:
    vm("upgrade", NAME, "--to", DEMO[2], "--rehearse", "--json", label="rehearse")
    vm("upgrade", NAME, "--to", DEMO[2], "--json", label="upgrade")
    vm("rollback", NAME, "--discard-new-data", "--json", label="rollback")
    vm("wait", "--healthy", NAME, "--timeout", "30", label="wait")


def report(args: argparse.Namespace, first: tuple[int, dict[str, int]],
           last: tuple[int, dict[str, int]], vm: VM, client: Client, secs: float) -> dict:
    ok = True
    print(f"\n{args.cycles} cycles in {secs:.0f} s ({secs / args.cycles:.2f} s per cycle); "
          f"client: {client.ok} notes written, {client.failed} refused while stopped")
    print(f"{'':<14}{'after 1':>12}{'after ' + str(args.cycles):>12}")
    size_a, size_b = first[0], last[0]
    grew = size_b - size_a
    size_ok = abs(grew) <= args.margin * 1024 * 1024
    ok &= size_ok
    print(f"{'store - data':<14}{size_a / 1e6:>10.1f}MB{size_b / 1e6:>10.1f}MB"
          f"  {'ok' if size_ok else 'GREW'} ({grew / 1e6:+.2f} MB, margin {args.margin} MiB)")
    why = {"volumes": "the notes: data", "containers/*/log": "the app's log: data",
           "state.db free bytes": "pruned journals' pages, reused"}
    for k, what in why.items():
        print(f"{'  ' + k:<14}{vm.sizes[0].get(k, 0) / 1e6:>10.2f}MB"
              f"{vm.sizes[-1].get(k, 0) / 1e6:>10.2f}MB  ({what})")
    if not size_ok or args.verbose:
        a_, b_ = vm.sizes[0], vm.sizes[-1]
        for k in sorted(set(a_) | set(b_)):
            if a_.get(k, 0) != b_.get(k, 0):
                print(f"  {k:<30}{a_.get(k, 0):>12}{b_.get(k, 0):>12}")
    for k in first[1]:
        a, b = first[1][k], last[1][k]
        ok &= a == b
        print(f"{k:<14}{a:>12}{b:>12}  {'ok' if a == b else 'LEAK'}")
    print(f"\n{'peak RSS (MB)':<14}{'first':>8}{'last':>8}{'max':>8}{'calls':>7}")
    mem: dict[str, dict[str, float]] = {}
    for k, xs in sorted(vm.rss.items()):
        mem[k] = {"first": xs[0] / 1024, "last": xs[-1] / 1024, "max": max(xs) / 1024,
                  "calls": len(xs)}
        print(f"{k:<14}{xs[0] / 1024:>8.1f}{xs[-1] / 1024:>8.1f}{max(xs) / 1024:>8.1f}"
              f"{len(xs):>7}")
        if len(xs) >= 4:  # flat: the last calls within 10% of the first ones
            head, tail = xs[: len(xs) // 4 or 1], xs[-(len(xs) // 4 or 1):]
            if max(tail) > 1.1 * max(head) + 2048:
                ok = False
                print(f"  {k}: resident memory grew")
    print("\nsoak: " + ("PASS" if ok else "FAIL"))
    return {"cycles": args.cycles, "seconds": secs, "ok": ok,
            "size": {"first": size_a, "last": size_b}, "counts": {"first": first[1],
            "last": last[1]}, "rss_mb": mem,
            "client": {"ok": client.ok, "refused": client.failed}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=200, help="cycles (default 200)")
    ap.add_argument("--margin", type=float, default=1.0,
                    help="MiB the store may differ by between the first and last count")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print where the store's size changed")
    args = ap.parse_args()
    if args.cycles < 2:
        raise SystemExit("soak: --cycles >= 2")
    reexec_in_namespaces()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    from volmerge.fixtures import image_archive
    from volmerge.runtime import sys as rsys

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    vm = VM(work / "root")
    client = Client()
    ok = False
    try:
        for kind in ("demo-v1", "demo-v2"):
            vm("image", "load", str(image_archive(kind)))
        vm("run", "-d", "--name", NAME, "-p", f"{PORT}:8080", "-v", f"{VOL}:/data", DEMO[1])
        vm("wait", "--healthy", NAME, "--timeout", "30")
        client.start()
        t0 = time.monotonic()
        cycle(vm)
        first = settle(vm)
        print(f"cycle 1 done; store {first[0] / 1e6:.1f} MB", flush=True)
        for i in range(2, args.cycles + 1):
            cycle(vm)
            if i % 10 == 0 or i == args.cycles:
                print(f"cycle {i} done ({time.monotonic() - t0:.0f} s)", flush=True)
        last = settle(vm)
        secs = time.monotonic() - t0
        client.stop()
        figures = report(args, first, last, vm, client, secs)
        ok = figures["ok"]
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
    finally:
        client.stop()
        from bench_upgrade import teardown  # bench/ is the script's directory

        teardown(vm)
        rsys.umount_tree(work)
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
