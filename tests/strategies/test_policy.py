"""Policy files: ordered glob rules and extra tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from volmerge.strategies.errors import BadInput
from volmerge.strategies.policy import (
    Policy,
    allow_data_loss_policy,
    glob_to_regex,
    load_policy,
    parse_policy,
    restrict_image_policy,
)
from volmerge.strategies.registry import find_strategy
from volmerge.strategies.tree import MergeConflict, merge_trees

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.mark.parametrize("glob,path,hit", [
    ("*.conf", "etc/app.conf", True), ("*.conf", "app.conf", True), ("/app.conf", "etc/app.conf", False),
    ("etc/*.conf", "etc/app.conf", True), ("etc/*.conf", "etc/x/app.conf", False),
    ("etc/**/*.conf", "etc/x/y/app.conf", True), ("etc/**/*.conf", "etc/app.conf", True),
    ("data/**", "data/a/b", True), ("?.db", "a.db", True), ("[ab].db", "c.db", False),
])
def test_globs(glob: str, path: str, hit: bool) -> None:
    assert bool(glob_to_regex(glob).match(path)) == hit


def test_first_rule_wins_and_tables(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[[rule]]\nglob = "special.conf"\nstrategy = "theirs"\non_conflict = "ours"\n'
                 '[[rule]]\nglob = "*.conf"\nstrategy = "text"\noptions = { x = 1 }\n'
                 '[sql]\nrename = { users = "accounts" }\n')
    pol = load_policy(p)
    assert pol.rule_for("a/special.conf").strategy == "theirs"
    assert pol.rule_for("a/other.conf").options == {"x": 1}
    assert pol.rule_for("x.txt") is None
    assert pol.table("sql") == {"rename": {"users": "accounts"}}
    both = Policy.combined(parse_policy('[[rule]]\nglob = "*"\nstrategy = "ours"\n[sql]\na = 1\n'), pol)
    assert both.rule_for("a/special.conf").strategy == "ours"
    assert both.table("sql") == {"a": 1, "rename": {"users": "accounts"}}


@pytest.mark.parametrize("text", [
    "[[rule]\n", 'rule = 1\n', '[[rule]]\nstrategy = "text"\n', '[[rule]]\nglob = "*"\n',
    '[[rule]]\nglob = "*"\nstrategy = "text"\non_conflict = "maybe"\n',
    '[[rule]]\nglob = "*"\nstrategy = "text"\nextra = 1\n',
    '[[rule]]\nglob = "*"\nstrategy = "nope"\n',
])
def test_bad_policies(text: str) -> None:
    with pytest.raises(BadInput):
        parse_policy(text)


# -- an image's policy may not lower the operator's safety ---------------------

IMAGE = "image:/etc/volmerge/policy.toml"
HOSTILE = """
[sql]
allow_data_loss = true
rename = { "t.a" = "t.a2" }

[[rule]]
glob = "app.conf"
strategy = "theirs"
on_conflict = "theirs"

[[rule]]
glob = "*.db"
strategy = "sql"
options = { allow_data_loss = true, policy = {}, sql = { allow_data_loss = true } }

[[rule]]
glob = "*.txt"
strategy = "ours"
on_conflict = "keep-both"
"""


def test_image_policy_is_restricted() -> None:
    pol = restrict_image_policy(parse_policy(HOSTILE, "label of img"), IMAGE)
    conf, db, txt = pol.rules
    assert conf.strategy == "" and conf.on_conflict is None
    assert conf.ignored == {"strategy": "theirs", "on_conflict": "theirs"}
    assert "allow_data_loss" not in db.options and db.strategy == "sql"
    assert (txt.strategy, txt.on_conflict, txt.ignored) == ("ours", "keep-both", {})
    assert pol.table("sql") == {"rename": {"t.a": "t.a2"}}
    assert {r.source for r in pol.rules} == {IMAGE}
    text = "\n".join(pol.warnings)
    assert len(pol.warnings) == 4 and text.count("allow_data_loss; ignored") == 2
    assert "'app.conf' asks for strategy 'theirs'" in text
    assert "'app.conf' asks for on_conflict 'theirs'" in text
    pol = restrict_image_policy(parse_policy('[sql]\nbookkeeping_tables = ["notes"]\n'), IMAGE)
    assert pol.table("sql") == {}
    assert "declares bookkeeping tables (notes); ignored" in pol.warnings[0]


def test_operator_policy_and_flag_win_over_the_image(tmp_path: Path) -> None:
    img = restrict_image_policy(parse_policy(HOSTILE), IMAGE)
    assert "allow_data_loss" not in Policy.combined(None, img).table("sql")
    flag = Policy.combined(allow_data_loss_policy(), None, img)
    assert flag.table("sql")["allow_data_loss"] is True
    assert flag.table("sql")["rename"] == {"t.a": "t.a2"} and flag.warnings == img.warnings
    p = tmp_path / "mine.toml"
    p.write_text('[sql]\nallow_data_loss = true\n'
                 '[[rule]]\nglob = "app.conf"\nstrategy = "theirs"\n')
    both = Policy.combined(load_policy(p), img)
    rule = both.rule_for("etc/app.conf")
    assert (rule.strategy, rule.source) == ("theirs", f"operator:{p}")
    assert both.table("sql")["allow_data_loss"] is True


def _db(path: Path, cols: str, rows: list[tuple]) -> None:
    con = sqlite3.connect(path)
    con.execute(f"create table t (id integer primary key, {cols})")
    marks = ", ".join("?" * len(rows[0])) if rows else ""
    if rows:
        con.executemany(f"insert into t values ({marks})", rows)
    con.commit()
    con.close()


def _trees(tmp_path: Path) -> tuple[Path, Path, Path]:
    """base/ours/theirs: the operator edited app.conf and added rows that use
    column b; the new image changed app.conf and dropped column b."""
    b, o, t = (tmp_path / n for n in ("base", "ours", "theirs"))
    for d in (b, o, t):
        d.mkdir()
    (b / "app.conf").write_text("[app]\nport = 80\nname = demo\n")
    (o / "app.conf").write_text("[app]\nport = 8080\nname = demo\n")
    (t / "app.conf").write_text("[app]\nport = 80\nname = demo\nlang = en\n")
    (b / "new.txt").write_text("1\n")
    (o / "new.txt").write_text("1\n")
    (t / "new.txt").write_text("2\n")
    _db(b / "app.db", "a text, b text", [(1, "x", "y")])
    _db(o / "app.db", "a text, b text", [(1, "x", "y"), (2, "mine", "precious")])
    _db(t / "app.db", "a text", [(1, "x")])
    return b, o, t


def test_image_cannot_drop_data_or_discard_the_operators_edit(tmp_path: Path) -> None:
    assert find_strategy("sql") is not None, "the sql strategy does not load (pip install -e .)"
    b, o, t = _trees(tmp_path)
    img = restrict_image_policy(parse_policy(HOSTILE.replace('rename = { "t.a" = "t.a2" }', "")),
                                IMAGE)
    rep = merge_trees(b, o, t, tmp_path / "out", policy=Policy.combined(None, img), dry_run=True)
    by = {f.path: f for f in rep.files}
    conf = by["app.conf"]
    assert conf.action == "merged" and conf.strategy == "structured"  # not 'theirs'
    assert (conf.policy, conf.rule) == (IMAGE, "app.conf")
    assert any("asks for strategy 'theirs'; ignored" in n for n in conf.overridden)
    assert by["app.db"].action == "conflict" and by["app.db"].policy == IMAGE
    assert "data loss refused" in by["app.db"].conflicts[0].message
    assert by["new.txt"].action == "took-theirs" and by["new.txt"].policy == "default"
    with pytest.raises(MergeConflict):
        merge_trees(b, o, t, tmp_path / "out", policy=Policy.combined(None, img))
    assert not (tmp_path / "out").exists()
    # the operator's --allow-data-loss lets the replay drop b; the edit still survives
    rep = merge_trees(b, o, t, tmp_path / "out",
                      policy=Policy.combined(allow_data_loss_policy(), None, img))
    merged = (tmp_path / "out" / "app.conf").read_text()
    assert merged == "[app]\nport = 8080\nname = demo\nlang = en\n"
    con = sqlite3.connect(tmp_path / "out" / "app.db")
    assert con.execute("select id, a from t order by id").fetchall() == [(1, "x"), (2, "mine")]
    con.close()


def test_image_cannot_declare_a_data_table_bookkeeping(tmp_path: Path) -> None:
    """An image naming the operator's data table as a bookkeeping table would
    have its rows replace the live ones, uncounted: the image's declaration is
    ignored (the rows are replayed); the operator's --policy may make it."""
    b, o, t = (tmp_path / n for n in ("base", "ours", "theirs"))
    for d in (b, o, t):
        d.mkdir()
    _db(b / "app.db", "a text", [(1, "x")])
    _db(o / "app.db", "a text", [(1, "x"), (2, "mine")])
    _db(t / "app.db", "a text", [(1, "x"), (3, "image's")])
    hostile = '[sql]\nbookkeeping_tables = ["t"]\n'
    img = restrict_image_policy(parse_policy(hostile), IMAGE)
    merge_trees(b, o, t, tmp_path / "out", policy=Policy.combined(None, img))
    con = sqlite3.connect(tmp_path / "out" / "app.db")
    assert con.execute("select id, a from t order by id").fetchall() == [(1, "x"), (2, "mine")]
    con.close()
    mine = tmp_path / "mine.toml"
    mine.write_text(hostile)
    merge_trees(b, o, t, tmp_path / "out2", policy=Policy.combined(load_policy(mine), None))
    con = sqlite3.connect(tmp_path / "out2" / "app.db")
    assert con.execute("select id, a from t order by id").fetchall() == [(1, "x"), (3, "image's")]
    con.close()


def test_operator_policy_may_discard(tmp_path: Path) -> None:
    b, o, t = _trees(tmp_path)
    mine = tmp_path / "mine.toml"
    mine.write_text('[sql]\nallow_data_loss = true\n'
                    '[[rule]]\nglob = "*.conf"\nstrategy = "theirs"\n')
    img = restrict_image_policy(parse_policy(HOSTILE), IMAGE)
    rep = merge_trees(b, o, t, tmp_path / "out", policy=Policy.combined(load_policy(mine), img),
                      dry_run=True)
    conf = {f.path: f for f in rep.files}["app.conf"]
    assert (conf.action, conf.strategy) == ("took-theirs", "theirs")
    assert (conf.policy, conf.rule, conf.overridden) == (f"operator:{mine}", "*.conf", [])
    js = rep.to_json()["files"]
    assert {"policy", "rule", "overridden"} <= set(js[0])


def test_image_on_conflict_theirs_falls_back_to_the_operators(tmp_path: Path) -> None:
    b, o, t = (tmp_path / n for n in ("base", "ours", "theirs"))
    for d, port in ((b, 80), (o, 8080), (t, 81)):
        d.mkdir()
        (d / "app.conf").write_text(f"[app]\nport = {port}\n")
    img = restrict_image_policy(parse_policy('[[rule]]\nglob = "*.conf"\nstrategy = "structured"\n'
                                             'on_conflict = "theirs"\n'), IMAGE)
    rep = merge_trees(b, o, t, tmp_path / "out", policy=img, on_conflict="ours")
    f = rep.files[0]
    assert f.action == "merged" and f.conflicts and (f.policy, f.rule) == (IMAGE, "*.conf")
    assert "asks for on_conflict 'theirs'; ignored" in f.overridden[0]
    assert (tmp_path / "out" / "app.conf").read_text() == "[app]\nport = 8080\n"
