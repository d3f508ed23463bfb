"""The conformance suite every strategy runs (architecture.md, principle 8): the identities.

base = ours = theirs gives it back unchanged; only ours changed gives ours
exactly; only theirs changed gives theirs exactly.  Also used by the plugin
test for a strategy installed at run time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from volmerge.strategies.base import MergeOptions


def _sqlite(path: Path, rows: list[str]) -> bytes:
    con = sqlite3.connect(path)
    con.execute("create table t (v text)")
    con.executemany("insert into t values (?)", [(r,) for r in rows])
    con.commit()
    con.close()
    data = path.read_bytes()
    path.unlink()
    return data


def samples(tmp: Path) -> list[tuple[str, bytes, bytes]]:
    """(path, base, changed) in every format a built-in strategy knows."""
    tmp.mkdir(parents=True, exist_ok=True)
    return [
        ("notes.txt", b"one\ntwo\nthree\n", b"one\nTWO\nthree\n"),
        ("crlf.txt", b"one\r\ntwo", b"one\r\n2"),
        ("c.json", b'{\n  "a": 1,\n  "b": [1]\n}\n', b'{\n  "a": 2,\n  "b": [1]\n}\n'),
        ("c.yaml", b"# c\na: 1  # one\nb: x\n", b"# c\na: 2  # one\nb: x\n"),
        ("c.toml", b'# c\n[s]\na = 1 # one\n', b'# c\n[s]\na = 2 # one\n'),
        ("c.ini", b"[s]\na = 1\n", b"[s]\na = 2\n"),
        ("blob.bin", b"\0\1\2", b"\0\1\3"),
        ("data.db", _sqlite(tmp / "s1.db", ["a"]), _sqlite(tmp / "s2.db", ["a", "b"])),
        ("app.log", b"started\n", b"started\nstopped\n"),
    ]


def _same_content(path: str, got: bytes, want: bytes, tmp: Path) -> bool:
    if got == want:
        return True
    if got.startswith(b"SQLite format 3\0") and want.startswith(b"SQLite format 3\0"):
        dumps = []
        for n, d in (("g.db", got), ("w.db", want)):
            (tmp / n).write_bytes(d)
            con = sqlite3.connect(tmp / n)
            dumps.append(list(con.iterdump()))
            con.close()
        return dumps[0] == dumps[1]
    return False


def run_identity(strategy: Any, path: str, base: bytes, changed: bytes, tmp: Path) -> None:
    """Raise AssertionError when an identity does not hold."""
    cases = [
        ("all same", base, base, base, base),
        ("only ours changed", base, changed, base, changed),
        ("only theirs changed", base, base, changed, changed),
        ("same change on both", base, changed, changed, changed),
    ]
    for label, b, o, t, want in cases:
        if callable(getattr(strategy, "merge_files", None)):
            d = tmp / f"{label.replace(' ', '_')}-{path}"
            d.mkdir(parents=True)
            for n, c in (("base", b), ("ours", o), ("theirs", t)):
                (d / n).write_bytes(c)
            out = d / "out"
            rep = strategy.merge_files(path, str(d / "base"), str(d / "ours"), str(d / "theirs"),
                                       str(out), MergeOptions())
            if out.exists():
                got = out.read_bytes()
            else:
                got = {"took-theirs": t}.get(rep.action, o)
        else:
            res = strategy.merge(path, b, o, t, MergeOptions())
            rep, got = res.report, res.content
        assert rep.action != "conflict", f"{strategy.name}: {label} on {path} conflicts"
        assert got is not None and _same_content(path, got, want, tmp), \
            f"{strategy.name}: {label} on {path} does not give the expected content"
        # (the report's action is not checked: the tree merge never calls a
        # strategy for these cases; the content is what must hold)


def check_strategy(strategy: Any, tmp: Path) -> int:
    """Run every sample the strategy handles; returns how many it handled."""
    n = 0
    for path, base, changed in samples(tmp):
        if strategy.handles(path, base[:8192]):
            run_identity(strategy, path, base, changed, tmp / f"s{n}")
            n += 1
    return n
