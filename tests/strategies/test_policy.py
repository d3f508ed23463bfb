"""Policy files: ordered glob rules and extra tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategies.errors import BadInput
from strategies.policy import Policy, glob_to_regex, load_policy, parse_policy


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
