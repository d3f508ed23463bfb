"""SQL replay benchmark (issue 6, item 9): volmerge against its peers, side by side.

    .venv/bin/python bench/bench_sql.py [--rows 1000000] [--runs 3] [--dump-mb 1024] [--skip-pg]

1. SQLite -> SQLite, 3 tables (integers, text, reals, an index, foreign keys):
   `sqlite3 old.db .dump | sqlite3 new.db`, bare ATTACH + INSERT ... SELECT,
   and `volmerge sql replay` (plan + replay + verification), identity schema
   and a schema with a rename, a retyped column and a new NOT NULL column.
2. PostgreSQL 15 -> PostgreSQL 15: `pg_dump | psql` against volmerge's COPY
   replay (including verification).
3. A large .sql dump streamed into a SQLite replay, peak RSS measured in a
   child process.

Medians of --runs runs; ratios printed as volmerge / peer.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SCHEMA = """
CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
                   title TEXT, views INTEGER);
CREATE TABLE comments(id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL REFERENCES posts(id),
                      body TEXT, rating REAL);
CREATE INDEX posts_by_user ON posts(user_id);
"""
SCHEMA_V2 = """
CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, active BOOLEAN NOT NULL);
CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
                   headline TEXT, views TEXT);
CREATE TABLE comments(id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL REFERENCES posts(id),
                      body TEXT, rating REAL);
CREATE INDEX posts_by_user ON posts(user_id);
"""


def make_old(path: str, rows: int) -> None:
    u, p = rows // 10, rows * 4 // 10
    c = rows - u - p
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    cte = "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?) "
    conn.execute(cte + "INSERT INTO users SELECT x, 'user number ' || x, x * 0.37 FROM s", (u,))
    conn.execute(cte + "INSERT INTO posts SELECT x, 1 + x % ?, 'a title for post ' || x, x * 7 % 1000 "
                       "FROM s", (p, u))
    conn.execute(cte + "INSERT INTO comments SELECT x, 1 + x % ?, 'comment body text ' || x, x * 0.01 "
                       "FROM s", (c, p))
    conn.commit()
    conn.close()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def medians(runs: int, setup, peers: dict) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Each peer ``runs`` times, interleaved (a, b, c, a, b, c, ...) so that
    whatever the machine does meanwhile falls on every peer alike; the
    median of each.  ``setup`` runs before every timed run, untimed."""
    out: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(runs):
        for name, fn in peers.items():
            setup()
            out[name].append(timed(fn))
    return {name: statistics.median(v) for name, v in out.items()}


def rm(*paths: str) -> None:
    for p in paths:
        for q in (p, p + "-journal", p + "-wal", p + "-shm"):
            if os.path.exists(q):
                os.unlink(q)


def sqlite_bench(work: str, rows: int, runs: int) -> dict[str, float]:
    from volmerge.strategies.sql import plan_replay, replay

    old = os.path.join(work, "old.db")
    new_schema = os.path.join(work, "new-schema.db")
    v2_schema = os.path.join(work, "v2-schema.db")
    out = os.path.join(work, "out.db")
    make_old(old, rows)
    for path, script in ((new_schema, SCHEMA), (v2_schema, SCHEMA_V2)):
        c = sqlite3.connect(path)
        c.executescript(script)
        c.close()

    def dump_pipe() -> None:
        subprocess.run(f"sqlite3 {old} .dump | sqlite3 {out}", shell=True, check=True)

    def bare() -> None:
        c = sqlite3.connect(out, isolation_level=None)
        c.executescript(SCHEMA)
        c.execute("ATTACH ? AS src", (old,))
        c.execute("BEGIN")
        for t in ("users", "posts", "comments"):
            c.execute(f"INSERT INTO main.{t} SELECT * FROM src.{t}")
        c.execute("COMMIT")
        c.close()

    phases: dict[str, list[float]] = {}

    def ours() -> None:
        with plan_replay(old, schema=new_schema) as plan:
            r = replay(plan, out)
        for k, v in r.phases.items():
            phases.setdefault(k, []).append(v)

    def ours_mapped() -> None:
        with plan_replay(old, schema=v2_schema, maps={"posts.title": "headline"},
                         defaults={"users.active": "1"}) as plan:
            replay(plan, out)

    res = medians(max(1, runs // 2), lambda: rm(out), {"sqlite3 .dump | sqlite3": dump_pipe})
    res.update(medians(runs, lambda: rm(out), {
        "bare ATTACH + INSERT...SELECT": bare,
        "volmerge replay (identity schema)": ours,
        "volmerge replay (rename, retype, new column)": ours_mapped}))
    rm(out)
    res.update({f"  phase: {k}": statistics.median(v) for k, v in phases.items()})
    return res


def pg_bench(work: str, rows: int, runs: int) -> dict[str, float]:
    import psycopg

    from volmerge.strategies.sql import plan_replay, replay
    from volmerge.strategies.sql.pgtemp import PgServer, local_runner

    server = PgServer("/usr/lib/postgresql/15/bin", os.path.join(work, "pgdata"), os.path.join(work, "pgsock"),
                      local_runner(), port=54329)
    server.initdb()
    server.start()
    try:
        old = os.path.join(work, "old.db")
        if not os.path.exists(old):
            make_old(old, rows)
        src = server.url("src")
        with plan_replay(old, schema=old) as plan:
            replay(plan, src)
        admin = psycopg.connect(server.url("postgres"), autocommit=True)
        target = {}

        def setup() -> None:
            # a fresh, empty destination (the last run's dropped: no pile of
            # databases for autovacuum to work through meanwhile), and no WAL
            # left to flush: a checkpoint falling inside one run but not the
            # other is noise
            admin.execute("DROP DATABASE IF EXISTS dst")
            admin.execute("CREATE DATABASE dst")
            admin.execute("CHECKPOINT")
            target["url"] = server.url("dst")

        def dump_pipe() -> None:
            subprocess.run(f"pg_dump '{src}' | psql -q -v ON_ERROR_STOP=1 '{target['url']}' >/dev/null",
                           shell=True, check=True)

        phases: dict[str, list[float]] = {}

        def ours() -> None:
            t = time.perf_counter()
            with plan_replay(src, schema=src) as plan:
                phases.setdefault("plan (catalogs, counts)", []).append(time.perf_counter() - t)
                r = replay(plan, target["url"])
            for k, v in r.phases.items():
                phases.setdefault(k, []).append(v)

        # the source's tables vacuumed and analysed first, as a live
        # database's are, rather than by autovacuum in the middle of a run
        with psycopg.connect(src, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
        def one_transaction() -> None:  # the replay on one connection, for comparison
            was = os.environ.get("VOLMERGE_PG_JOBS")
            os.environ["VOLMERGE_PG_JOBS"] = "1"
            try:
                with plan_replay(src, schema=src) as plan:
                    replay(plan, target["url"])
            finally:
                if was is None:
                    del os.environ["VOLMERGE_PG_JOBS"]
                else:
                    os.environ["VOLMERGE_PG_JOBS"] = was

        res = medians(runs, setup, {"pg_dump | psql": dump_pipe,
                                    "volmerge replay PG->PG (with verification)": ours,
                                    "  the same in one transaction, one connection": one_transaction})
        res.update({f"  phase: {k}": statistics.median(v) for k, v in phases.items()})
        admin.close()
        return res
    finally:
        server.stop()


def dump_bench(work: str, megabytes: int) -> dict[str, float]:
    dump = os.path.join(work, "big.sql")
    schema = os.path.join(work, "big-schema.db")
    c = sqlite3.connect(schema)
    c.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL);")
    c.close()
    payload = "y" * 180
    target = megabytes * 1024 * 1024
    with open(dump, "w") as f:
        f.write("BEGIN TRANSACTION;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL);\n")
        i = 0
        chunk = []
        while f.tell() < target:
            chunk.clear()
            for _ in range(10000):
                i += 1
                chunk.append(f"INSERT INTO t VALUES({i},'{payload} {i}',{i * 0.5});\n")
            f.write("".join(chunk))
        f.write("COMMIT;\n")
    size = os.path.getsize(dump)
    out = os.path.join(work, "big-out.db")
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(HERE)!r})\n"
            "from volmerge.strategies.sql import plan_replay, replay\n"
            f"with plan_replay({dump!r}, schema={schema!r}, workdir={work!r}) as p: replay(p, {out!r})\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    secs = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rm(out)
    os.unlink(dump)
    return {"dump MB": size / 1e6, "rows": i, "seconds": secs, "peak RSS MB": peak_kb / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dump-mb", type=int, default=1024)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-dump", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="volmerge-bench-sql-", dir="/var/tmp")
    try:
        if not args.skip_sqlite:
            print(f"SQLite -> SQLite, {args.rows:,} rows in 3 tables, median of {args.runs}:")
            r = sqlite_bench(work, args.rows, args.runs)
            for k, v in r.items():
                print(f"  {k:<48} {v:7.2f} s")
            bare = r["bare ATTACH + INSERT...SELECT"]
            for k in ("volmerge replay (identity schema)", "volmerge replay (rename, retype, new column)"):
                print(f"  ratio {k[16:]:<42} {r[k] / bare:5.2f}x bare, "
                      f"{r['sqlite3 .dump | sqlite3'] / r[k]:5.1f}x faster than .dump | sqlite3")
        if not args.skip_pg:
            print(f"PostgreSQL 15 -> PostgreSQL 15, {args.rows:,} rows, median of {args.runs}:")
            p = pg_bench(work, args.rows, args.runs)
            for k, v in p.items():
                print(f"  {k:<48} {v:7.2f} s")
            print(f"  ratio volmerge / pg_dump|psql {p['volmerge replay PG->PG (with verification)'] / p['pg_dump | psql']:.2f}x"
                  f" (one transaction: {p['  the same in one transaction, one connection'] / p['pg_dump | psql']:.2f}x)")
        if not args.skip_dump:
            d = dump_bench(work, args.dump_mb)
            print(f"dump streaming: {d['dump MB']:.0f} MB, {d['rows']:,} rows replayed in {d['seconds']:.1f} s, "
                  f"peak RSS {d['peak RSS MB']:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
