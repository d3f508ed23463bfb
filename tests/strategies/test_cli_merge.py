"""`volmerge merge` and `volmerge strategies` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .treeutil import read, three

BASE = {"app.yaml": b"port: 1\nlevel: info\n", "notes.txt": b"a\nb\nc\n"}


def trees(tmp: Path, ours_notes: bytes = b"a\nb\nc\n"):  # type: ignore[no-untyped-def]
    return three(tmp, BASE,
                 {"app.yaml": b"port: 2\nlevel: info\n", "notes.txt": ours_notes},
                 {"app.yaml": b"port: 1\nlevel: debug\n", "notes.txt": b"a\nB\nc\n", "new": b"n\n"})


def test_merge_directories(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path)
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert read(tmp_path / "out") == {"app.yaml": b"port: 2\nlevel: debug\n", "notes.txt": b"a\nB\nc\n",
                                      "new": b"n\n"}
    assert "summary: 1 merged, 1 took-theirs, 1 added" in p.stdout


def test_conflict_fails_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path, b"a\nX\nc\n")
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--json")
    assert p.returncode == 1
    assert p.stderr.startswith("volmerge: error: 1 conflict (notes.txt); nothing written")
    rep = json.loads(p.stdout)
    assert rep["summary"]["conflicts"] == 1 and rep["written"] is False
    assert [f["action"] for f in rep["files"] if f["path"] == "notes.txt"] == ["conflict"]
    assert not (tmp_path / "out").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["base", "ours", "theirs"]


@pytest.mark.parametrize("mode,expected", [
    ("ours", b"a\nX\nc\n"), ("theirs", b"a\nB\nc\n"),
    ("markers", b"a\n<<<<<<< ours\nX\n=======\nB\n>>>>>>> theirs\nc\n"),
    ("keep-both", b"a\nX\nc\n")])
def test_on_conflict(cli, tmp_path: Path, mode: str, expected: bytes) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path, b"a\nX\nc\n")
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--on-conflict", mode)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "notes.txt").read_bytes() == expected
    assert (tmp_path / "out" / "notes.txt.volmerge-new").exists() == (mode == "keep-both")


def test_dry_run_shows_diffs_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path)
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "out").exists()
    assert "merged" in p.stdout and "-level: info\n+level: debug" in p.stdout
    assert "would write 3 path(s)" in p.stdout
    j = json.loads(cli("merge", str(b), str(o), str(t), "--dry-run", "--json").stdout)
    assert "+level: debug" in [f for f in j["files"] if f["path"] == "app.yaml"][0]["diff"]


def test_files(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for n, c in (("b", b"a\nb\nc\n"), ("o", b"A\nb\nc\n"), ("t", b"a\nb\nC\n")):
        (tmp_path / n).write_bytes(c)
    p = cli("merge", *(str(tmp_path / n) for n in "bot"), "-o", str(tmp_path / "out"))
    assert p.returncode == 0 and (tmp_path / "out").read_bytes() == b"A\nb\nC\n"


def test_policy_rule(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path, b"a\nX\nc\n")
    (tmp_path / "p.toml").write_text('[[rule]]\nglob = "*.txt"\nstrategy = "ours"\n')
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--policy", str(tmp_path / "p.toml"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"a\nX\nc\n"
    pol = str(tmp_path / "p.toml")
    p = cli("merge", str(b), str(o), str(t), "--dry-run", "--json", "--policy", pol)
    by = {f["path"]: f for f in json.loads(p.stdout)["files"]}
    f = by["notes.txt"]
    assert (f["policy"], f["rule"], f["overridden"]) == (f"operator:{pol}", "*.txt", [])
    assert (by["app.yaml"]["policy"], by["app.yaml"]["rule"]) == ("default", None)
    p = cli("merge", str(b), str(o), str(t), "--dry-run", "--policy", str(tmp_path / "p.toml"))
    assert f"[policy operator:{tmp_path / 'p.toml'} rule '*.txt']" in p.stdout


@pytest.mark.parametrize("bad,message", [
    ("missing", "does not exist"),
    ("out-not-empty", "is not empty"),
    ("policy-syntax", "does not parse"),
    ("policy-strategy", "unknown merge strategy"),
    ("mixed", "must all be files or all directories"),
    ("on-conflict", "--on-conflict must be one of"),
    ("no-output", "missing -o OUT"),
])
def test_bad_input(cli, tmp_path: Path, bad: str, message: str) -> None:  # type: ignore[no-untyped-def]
    b, o, t = trees(tmp_path)
    out = tmp_path / "out"
    args = ["merge", str(b), str(o), str(t), "-o", str(out)]
    pol = tmp_path / "p.toml"
    if bad == "missing":
        args[1] = str(tmp_path / "nope")
    elif bad == "out-not-empty":
        out.mkdir()
        (out / "x").write_text("x")
    elif bad == "policy-syntax":
        pol.write_text("[[rule]\n")
        args += ["--policy", str(pol)]
    elif bad == "policy-strategy":
        pol.write_text('[[rule]]\nglob = "*"\nstrategy = "nope"\n')
        args += ["--policy", str(pol)]
    elif bad == "mixed":
        args[3] = str(t / "new")
    elif bad == "on-conflict":
        args += ["--on-conflict", "maybe"]
    elif bad == "no-output":
        args = args[:4]
    p = cli(*args)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("volmerge: error: ") and message in p.stderr and p.stderr.count("\n") == 1
    assert read(o) == {"app.yaml": b"port: 2\nlevel: info\n", "notes.txt": b"a\nb\nc\n"}
    assert not out.exists() or bad == "out-not-empty"


def test_strategies_listing(cli) -> None:  # type: ignore[no-untyped-def]
    p = cli("strategies")
    assert p.returncode == 0 and p.stdout.startswith("NAME")
    rows = {r["name"]: r for r in json.loads(cli("strategies", "--json").stdout)}
    assert rows["text"]["status"] == "ok" and rows["text"]["entry_point"] == "volmerge.strategies.text:TextStrategy"


def test_allow_data_loss_flag(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    b, o, t = three(tmp_path, {}, {}, {})
    for d, cols, rows in ((b, "a, gone", [("x", None)]), (o, "a, gone", [("x", "kept?")]),
                          (t, "a", [("y",)])):
        con = sqlite3.connect(d / "app.db")
        con.execute(f"create table t ({cols})")
        con.executemany(f"insert into t values ({', '.join('?' * len(rows[0]))})", rows)
        con.commit()
        con.close()
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"))
    assert p.returncode == 1 and "conflict" in p.stderr and not (tmp_path / "out").exists()
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--allow-data-loss")
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(tmp_path / "out" / "app.db")
    assert con.execute("select a from t").fetchall() == [("x",)]
    con.close()
