"""The structured strategy: key-level merges that keep the operator's layout."""

from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from volmerge.strategies.base import MergeOptions
from volmerge.strategies.structured import MISSING, StructuredStrategy, plan_merge

S = StructuredStrategy()


def merge(path: str, base: str | None, ours: str, theirs: str, oc: str = "fail"):  # type: ignore[no-untyped-def]
    return S.merge(path, base.encode() if base is not None else None, ours.encode(), theirs.encode(),
                   MergeOptions(on_conflict=oc))  # type: ignore[arg-type]


YAML_BASE = """# the server
server:
  host: "localhost"   # where to listen
  port: 8080
# about logging
logging:
  level: info
plugins: [a, b]
"""


def test_yaml_neighbouring_keys_keep_comments_and_quotes() -> None:
    ours = YAML_BASE.replace("port: 8080", "port: 9090  # operator")
    theirs = YAML_BASE.replace("level: info", "level: debug").replace(
        "  port: 8080\n", "  port: 8080\n  # seconds before giving up\n  timeout: 30\n")
    r = merge("c.yaml", YAML_BASE, ours, theirs)
    assert r.report.action == "merged" and not r.report.conflicts
    text = r.content.decode()
    assert text == (
        '# the server\nserver:\n  host: "localhost"   # where to listen\n  port: 9090  # operator\n'
        "  # seconds before giving up\n  timeout: 30\n# about logging\nlogging:\n  level: debug\n"
        "plugins: [a, b]\n")


def test_yaml_conflict_by_dotted_path_and_resolutions() -> None:
    ours = YAML_BASE.replace("level: info", "level: warn")
    theirs = YAML_BASE.replace("level: info", "level: debug")
    r = merge("c.yml", YAML_BASE, ours, theirs)
    assert r.content is None and r.report.conflicts[0].location == "logging.level"
    assert r.report.conflicts[0].ours == "warn" and r.report.conflicts[0].theirs == "debug"
    assert "level: debug" in merge("c.yml", YAML_BASE, ours, theirs, "theirs").content.decode()
    assert merge("c.yml", YAML_BASE, ours, theirs, "ours").content.decode() == ours
    m = merge("c.yml", YAML_BASE, ours, theirs, "markers")
    assert m.report.action == "conflict" and b"<<<<<<< ours\n  level: warn\n" in m.content


def test_lists_append_merge_and_conflict() -> None:
    r = merge("c.json", '{"l": [1, 2]}', '{"l": [1, 2, 3]}', '{"l": [1, 2, 4]}')
    assert json.loads(r.content) == {"l": [1, 2, 3, 4]}
    r = merge("c.json", '{"l": [1, 2]}', '{"l": [9, 2]}', '{"l": [1, 8]}')
    assert json.loads(r.content) == {"l": [9, 8]}  # element-wise
    r = merge("c.json", '{"l": [1, 2]}', '{"l": [2]}', '{"l": [1, 2, 3]}')
    assert r.report.action == "conflict" and r.report.conflicts[0].location == "l"


def test_json_keeps_indentation_and_order() -> None:
    base = '{\n    "b": 1,\n    "a": {"x": 1}\n}\n'
    ours = '{\n    "b": 2,\n    "a": {"x": 1}\n}\n'
    theirs = '{\n    "b": 1,\n    "new": "n",\n    "a": {"x": 1, "y": 2}\n}\n'
    r = merge("c.json", base, ours, theirs)
    # the line merge's conflict (neighbouring lines) settled line by line:
    # theirs' spelling of the lines only theirs changed (issue 16, point 1)
    assert r.content.decode() == '{\n    "b": 2,\n    "new": "n",\n    "a": {"x": 1, "y": 2}\n}\n'
    # both sides added a key at the same place: the key-level merge writes
    # the document again, with ours' indentation (theirs' key after its
    # predecessor there)
    base = '{\n    "b": 1\n}\n'
    r = merge("c.json", base, '{\n    "b": 1,\n    "o": 2\n}\n', '{\n    "b": 1,\n    "t": 3\n}\n')
    assert r.content.decode() == '{\n    "b": 1,\n    "t": 3,\n    "o": 2\n}\n'


def test_toml_new_key_with_comment() -> None:
    base = '# app\n[server]\nport = 8080  # port\n\n[log]\nlevel = "info"\n'
    ours = base.replace('"info"', '"warn"')
    theirs = base.replace("port = 8080  # port\n", "port = 8080  # port\n# idle seconds\ntimeout = 30\n")
    r = merge("c.toml", base, ours, theirs)
    assert r.content.decode() == ('# app\n[server]\nport = 8080  # port\n# idle seconds\ntimeout = 30\n\n'
                                  '[log]\nlevel = "warn"\n')
    assert tomllib.loads(r.content.decode())["server"]["timeout"] == 30


def test_ini_new_option_and_section() -> None:
    base = "# app\n[server]\nhost = localhost\nport = 8080\n\n[log]\nlevel = info\n"
    ours = base.replace("host = localhost", "host = example.org  ; operator")
    theirs = base.replace("port = 8080\n", "port = 8080\n# in seconds\ntimeout = 30\n") + "\n# metrics\n[metrics]\non = yes\n"
    r = merge("app.conf", base, ours, theirs)
    assert r.report.strategy == "structured"
    assert r.content.decode() == ("# app\n[server]\nhost = example.org  ; operator\nport = 8080\n# in seconds\n"
                                  "timeout = 30\n\n[log]\nlevel = info\n\n# metrics\n[metrics]\non = yes\n")


def test_unparsable_falls_back_to_text() -> None:
    r = merge("c.json", '{"a": 1,\n"b": 2}\n', '{"a": 5,\n"b": 2}\n', '{"a": 1,\n"b": 2,,}\n')
    assert r.report.strategy == "text" and "fell back to text: JSON does not parse" in r.report.notes[0]


def _alias_bomb() -> str:
    """A "billion laughs" YAML document: 9 levels of 9 aliases, 9**9 leaves."""
    lines = ['a0: &a0 "lol"']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
def test_yaml_alias_bomb_falls_back_to_text() -> None:
    bomb = _alias_bomb()
    assert len(bomb) <= 500
    r = merge("c.yaml", "x: 1\n", "x: 1\ny: 2\n", bomb)
    assert r.report.strategy == "text"
    assert "fell back to text" in r.report.notes[0] and "alias" in r.report.notes[0]
    assert r.content is None and r.report.action == "conflict"   # text: both changed the file
    r = merge("c.yaml", bomb, bomb + "y: 1\n", "z: 1\n" + bomb)   # the bomb in every version
    # git's line merge is clean: its result, and the bomb is never even parsed (issue 16 point 1)
    assert r.report.action == "merged" and "line merge clean: git merge-file's result" in r.report.notes
    assert r.content == ("z: 1\n" + bomb + "y: 1\n").encode()


def test_yaml_shared_aliases_below_the_bound_still_merge() -> None:
    base = "d: &d {k: 1}\nuse: [*d, *d]\nv: 1\n"
    r = merge("c.yaml", base, base.replace("v: 1", "v: 2"), base + "w: 3\n")
    assert r.report.strategy == "structured" and r.report.action == "merged"
    assert b"v: 2" in r.content and b"w: 3" in r.content


def test_types_are_not_confused() -> None:
    r = merge("c.json", '{"a": 1}', '{"a": true}', '{"a": 1.0}')
    assert r.report.action == "conflict"


# -- properties on plain data --------------------------------------------------
scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c"]), st.booleans())
docs = st.recursive(scalars, lambda c: st.dictionaries(st.sampled_from(["k", "l", "m", "n"]), c, max_size=4),
                    max_leaves=8)
maps = st.dictionaries(st.sampled_from(["k", "l", "m", "n", "o"]), docs, max_size=5)


def apply_json(base: dict, ours: dict, theirs: dict, oc: str = "fail"):  # type: ignore[no-untyped-def]
    r = S.merge("x.json", json.dumps(base).encode(), json.dumps(ours).encode(), json.dumps(theirs).encode(),
                MergeOptions(on_conflict=oc))  # type: ignore[arg-type]
    return r, (json.loads(r.content) if r.content is not None else None)


@settings(max_examples=200, deadline=None)
@given(maps, maps)
def test_identities(base: dict, other: dict) -> None:
    assert apply_json(base, base, base)[1] == base
    assert apply_json(base, other, base)[1] == other
    assert apply_json(base, base, other)[1] == other


@settings(max_examples=200, deadline=None)
@given(maps, maps, maps)
def test_symmetry_and_no_lost_changes(base: dict, ours: dict, theirs: dict) -> None:
    r1, m1 = apply_json(base, ours, theirs)
    r2, m2 = apply_json(base, theirs, ours)
    assert (m1 is None) == (m2 is None)
    if m1 is not None:
        assert m1 == m2  # the same data whichever side is called ours
        for side in (ours, theirs):  # every key a side changed has that side's value
            for k in side:
                if base.get(k, MISSING) != side[k] and not isinstance(side[k], dict):
                    assert m1[k] == side[k]


@settings(max_examples=200, deadline=None)
@given(maps, maps, maps)
def test_disjoint_key_edits_never_conflict(base: dict, ours: dict, theirs: dict) -> None:
    o = {**base, **{k: v for k, v in ours.items() if k in ("k", "l")}}
    t = {**base, **{k: v for k, v in theirs.items() if k in ("m", "n")}}
    r, m = apply_json(base, o, t)
    assert r.report.action != "conflict"
    assert m == {**o, **{k: t[k] for k in ("m", "n") if k in t}}


@settings(max_examples=100, deadline=None)
@given(maps, maps, maps)
def test_yaml_merge_equals_plain_merge(base: dict, ours: dict, theirs: dict) -> None:
    """The round-trip path (ruamel) gives the same data as the plain plan."""
    import io

    def dump(d: dict) -> bytes:
        buf = io.StringIO()
        YAML().dump(d, buf)
        return buf.getvalue().encode()

    rj, mj = apply_json(base, ours, theirs)
    ry = S.merge("x.yaml", dump(base), dump(ours), dump(theirs), MergeOptions())
    assert (mj is None) == (ry.content is None)
    if mj is not None:
        assert (YAML(typ="safe").load(ry.content) or {}) == mj


def test_plan_reports_dotted_paths() -> None:
    p = plan_merge({"a": {"b": 1}}, {"a": {"b": 2}}, {"a": {"b": 3}})
    assert [c.location for c, _ in p.conflicts] == ["a.b"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["x.json", "x.yaml", "x.toml", "x.ini"]),
       st.lists(st.sampled_from([b"a", b": ", b"=", b"[s]", b"\n", b"- ", b"  ", b"{", b"}", b'"', b"#", b"1",
                                 b"\xff", b",", b"[", b"]", b"---", b"&x", b"*x"]), max_size=12).map(b"".join),
       st.lists(st.sampled_from([b"a", b": ", b"=", b"[s]", b"\n", b"1", b"b", b"- "]), max_size=10).map(b"".join),
       st.lists(st.sampled_from([b"a", b": ", b"=", b"[s]", b"\n", b"2", b"c", b"  "]), max_size=10).map(b"".join))
def test_hostile_inputs_never_crash(path: str, base: bytes, ours: bytes, theirs: bytes) -> None:
    r = S.merge(path, base, ours, theirs, MergeOptions(on_conflict="markers"))
    assert r.report.action in ("merged", "conflict", "unchanged", "took-theirs")
    assert r.content is not None
