"""PostgreSQL major upgrade benchmark (issue 19 point 5): volmerge's pgmajor
path against ``pg_upgrade --copy`` run by hand, on the same data.

    .venv/bin/python bench/bench_pgupgrade.py [--rows 1000000] [--runs 3] [--dump]

A PostgreSQL 15 cluster (this host's Debian 15) with ``--rows`` rows in two
databases (pgbench's tables in ``app``: its accounts hold the rows; a small
``shop``) is upgraded to 16 (pgserver's) by

- volmerge: ``pgmajor.upgrade_datadir`` as the upgrade transaction runs it —
  the frozen data under a copy-on-write overlay, its settings read, initdb,
  ``pg_upgrade --copy`` with ``pg_upgrade --check`` beside it (on a copy of
  the new cluster in a tmpfs scratch), then every table of both databases
  verified old server against new (row counts and checksums of every row),
  ANALYZE, the configuration carried, one sync — all of it timed;
- by hand: ``initdb`` and ``pg_upgrade --copy`` on a copy of the old
  cluster made beforehand (untimed): no check run, no verification.

Runs are interleaved, each round starting with another path (ours, peer;
peer, ours; ...), each after a ``sync`` so that none writes back what an
earlier run left dirty; the medians and their ratio are printed.
``--dump`` adds the dump-and-restore path (the fallback) for comparison;
``--cpu`` also prints each path's CPU time (this process and everything it
starts, daemonized servers included: a cpuacct cgroup of its own, removed
at the end); ``--phases`` prints each path's steps, those marked "(beside)" overlapping
the critical path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PG15_BIN = "/usr/lib/postgresql/15/bin"
SHOP = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers(id), total numeric);
INSERT INTO customers (name) SELECT 'c' || i FROM generate_series(1, 1000) i;
INSERT INTO orders (customer, total) SELECT 1 + i % 1000, i * 1.25 FROM generate_series(1, 20000) i;
"""


def pg16_bindir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")  # located, not imported (its import writes files)
    d = os.path.join(os.path.dirname(spec.origin or ""), "pginstall", "bin") if spec else ""
    if not os.path.isfile(os.path.join(d, "pg_upgrade")):
        sys.exit("bench_pgupgrade: needs pgserver's PostgreSQL 16 (pip install 'volmerge[pg16]')")
    return d


def make_old(work: str, rows: int):  # type: ignore[no-untyped-def]
    """The old cluster, shut down cleanly; returns its data directory."""
    from volmerge.strategies.sql.pgtemp import PgServer
    from volmerge.upgrade.pgdata import host_tools

    srv = PgServer(host_tools(PG15_BIN), os.path.join(work, "old"), os.path.join(work, "s15"),
                   options={"fsync": "off", "full_page_writes": "off"})
    srv.initdb("UTF8", "C.UTF-8")
    srv.start()
    try:
        env = dict(os.environ, PGHOST=srv.sockdir, PGUSER="postgres")
        for sql in ("CREATE DATABASE app", "CREATE DATABASE shop"):
            subprocess.run([f"{PG15_BIN}/psql", "-q", "-d", "postgres", "-c", sql], env=env, check=True)
        scale = max(1, rows // 100_000)
        subprocess.run([f"{PG15_BIN}/pgbench", "-i", "-q", "-s", str(scale), "app"], env=env,
                       check=True, capture_output=True)
        subprocess.run([f"{PG15_BIN}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", "shop", "-c", SHOP],
                       env=env, check=True)
    finally:
        srv.stop()
    return srv.datadir


def rm(*paths: str) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def aside(trash: str, *paths: str) -> None:
    """Move ``paths`` out of the way, to be removed after the last run: on
    this journal-less ext4 an inode freed in the last 60 s (300 s while its
    inode table block is dirty) is passed over, the inode table read to find
    that out, so the thousands of files a run deletes would slow the next
    run's file creation, whichever path it is."""
    os.makedirs(trash, exist_ok=True)
    for p in paths:
        if os.path.lexists(p):
            os.rename(p, os.path.join(trash, str(len(os.listdir(trash)))))


class CpuMeter:
    """CPU seconds of this process and all it starts (the servers too, which
    pg_ctl daemonizes): a cgroup of its own, v1 cpuacct or v2, joined for
    the duration."""

    def __init__(self) -> None:
        v1, v2 = "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/unified"
        root = v1 if os.path.isfile(os.path.join(v1, "cpuacct.usage")) else v2
        if not os.path.isdir(root):
            root = "/sys/fs/cgroup"
        self.home = self._mine(root)
        self.dir = os.path.join(root, f"volmerge-bench-pgupgrade-{os.getpid()}")
        os.mkdir(self.dir)
        self._join(self.dir)

    @staticmethod
    def _mine(root: str) -> str:
        """The cgroup this process is in now, under ``root``."""
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrl, path = line.rstrip("\n").split(":", 2)
                if ("cpuacct" in ctrl.split(",") and root.endswith("cpuacct")) or \
                        (ctrl == "" and not root.endswith("cpuacct")):
                    return os.path.join(root, path.lstrip("/"))
        return root

    @staticmethod
    def _join(d: str) -> None:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def seconds(self) -> float:
        usage = os.path.join(self.dir, "cpuacct.usage")
        if os.path.isfile(usage):
            with open(usage) as f:
                return int(f.read()) / 1e9
        with open(os.path.join(self.dir, "cpu.stat")) as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("usage_usec")) / 1e6

    def close(self) -> None:
        self._join(self.home)
        time.sleep(0.1)  # the servers' last processes gone
        os.rmdir(self.dir)


def print_phases(phases: dict[str, dict[str, list[float]]]) -> None:
    """Each path's steps in the order first heard, medians over the runs;
    steps marked "(beside)" overlap others and are not on the critical path."""
    for path, steps in phases.items():
        print(f"  phases of {path} (median s):")
        for step, xs in steps.items():
            print(f"    {step:<44} {statistics.median(xs):6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dump", action="store_true", help="also time the dump-and-restore path")
    ap.add_argument("--cpu", action="store_true",
                    help="also measure each path's CPU seconds (a cpuacct cgroup of its own)")
    ap.add_argument("--phases", action="store_true",
                    help="print each path's per-phase timeline (medians over the runs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_pgupgrade: run as root (the servers run as the system user volmerge-pg)")
    from volmerge.strategies.sql.pgmajor import clone_datadir, upgrade_datadir
    from volmerge.strategies.sql.pgtemp import HostTools, give
    from volmerge.upgrade.pgdata import host_tools
    from volmerge.upgrade.pgsnap import overlay_snapshot, tmpfs_scratch

    pg16 = pg16_bindir()
    meter: CpuMeter | None = None
    work = tempfile.mkdtemp(prefix="volmerge-bench-pgupgrade-", dir="/var/tmp")
    os.chmod(work, 0o711)
    try:
        old = make_old(work, args.rows)
        t15, t16 = host_tools(PG15_BIN), host_tools(pg16)
        new, scratch, by_hand = (os.path.join(work, d) for d in ("new", "scratch", "by-hand"))
        jobs = str(max(1, min(4, os.cpu_count() or 1)))
        last: dict = {}
        phases: dict[str, dict[str, list[float]]] = {}

        def tick(path: str, step: str, seconds: float) -> None:
            phases.setdefault(path, {}).setdefault(step, []).append(seconds)

        def ours(method: str = "auto") -> None:
            path = "volmerge, " + ("dump and restore" if method == "dump" else "pg_upgrade path")
            r = upgrade_datadir(old, new, t15, t16, workdir=scratch, method=method,
                                snapshot=overlay_snapshot, scratch=tmpfs_scratch,
                                timing=lambda step, s: tick(path, step, s))
            if method == "auto" and not r.method.startswith("pg_upgrade"):
                raise SystemExit(f"bench_pgupgrade: volmerge did not take pg_upgrade: {r.fallback}")
            last["rows"] = sum(t["rows"] for d in r.databases for t in d["tables"])

        trash = os.path.join(work, "trash")

        def setup_by_hand() -> None:
            aside(trash, by_hand, new)
            clone_datadir(old, by_hand)
            give(by_hand, t16.user)
            for d in (new, scratch):
                os.makedirs(d, exist_ok=True)
                give(d, t16.user)
            os.rmdir(new)

        def peer() -> None:
            from volmerge.strategies.sql.pgtemp import PgServer

            t0 = time.perf_counter()
            PgServer(t16, new, os.path.join(scratch, "s"), superuser="postgres").initdb(
                "UTF8", "C.UTF-8")
            tick("by hand", "initdb --no-sync", time.perf_counter() - t0)
            t0 = time.perf_counter()
            os.makedirs(os.path.join(scratch, "s"), exist_ok=True)
            give(os.path.join(scratch, "s"), t16.user)
            p = HostTools(pg16, t16.user, scratch).run(
                "pg_upgrade", "-b", PG15_BIN, "-B", pg16, "-d", by_hand, "-D", new, "-U", "postgres",
                "-s", os.path.join(scratch, "s"), "-j", jobs, "--copy")
            if p.returncode != 0:
                raise SystemExit(f"bench_pgupgrade: pg_upgrade by hand failed: {p.stdout[-600:]}")
            tick("by hand", "pg_upgrade --copy (with its sync)", time.perf_counter() - t0)

        peers = {"volmerge (pg_upgrade path, with verification)": ours,
                 "pg_upgrade --copy by hand": peer}
        if args.dump:
            peers["volmerge (dump and restore path, with verification)"] = lambda: ours("dump")
        times: dict[str, list[float]] = {k: [] for k in peers}
        cpus: dict[str, list[float]] = {k: [] for k in peers}
        meter = CpuMeter() if args.cpu else None
        names = list(peers)
        for r in range(args.runs):
            # each round starts with another path: none always follows the same one; what a
            # run leaves is moved aside and removed at the end (aside())
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = peers[name]
                setup_by_hand() if fn is peer else aside(trash, new, scratch)
                os.sync()  # no run writes back what an earlier one (or its set-up) left dirty
                c0, t0 = meter.seconds() if meter else 0.0, time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                if meter:
                    cpus[name].append(meter.seconds() - c0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"PostgreSQL 15 -> 16, {last['rows']:,} rows in 2 databases, median of {args.runs}"
              f" (runs interleaved, each round starting with another path):")
        for k, v in med.items():
            print(f"  {k:<56} {v:7.2f} s   (runs: {', '.join(f'{x:.2f}' for x in times[k])})")
        if meter:
            for k, xs in cpus.items():
                print(f"  CPU of {k:<49} {statistics.median(xs):7.2f} s   "
                      f"(runs: {', '.join(f'{x:.2f}' for x in xs)})")
        ratio = med["volmerge (pg_upgrade path, with verification)"] / med["pg_upgrade --copy by hand"]
        print(f"  ratio volmerge / pg_upgrade --copy by hand: {ratio:.2f}x (goal <= 1.5x)")
        if args.phases:
            print_phases(phases)
        if args.dump:
            d = med["volmerge (dump and restore path, with verification)"]
            print(f"  dump and restore / pg_upgrade path: {d / med[next(iter(peers))]:.2f}x")
    finally:
        if meter:
            meter.close()
        rm(work)


if __name__ == "__main__":
    main()
