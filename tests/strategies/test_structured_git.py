"""Differential: the structured strategy against `git merge-file -p` on
generated configuration files of every structured format.  Wherever git
merges cleanly, the structured result is git's, byte for byte; where git
stops, a merged result parses."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volmerge.strategies.base import MergeOptions
from volmerge.strategies.structured import DOCS, StructuredStrategy

S = StructuredStrategy()
FILES = {"ini": "app.ini", "yaml": "app.yaml", "json": "app.json", "toml": "app.toml",
         "env": "app.env", "properties": "app.properties"}
VALUES = ["on", "off", "8080", "9090", "/var/lib/app", "info", "debug"]
WORDS = ["listen address", "number of workers", "where data lives", "log level", "see the manual"]


def git_merge(tmp: Path, base: bytes, ours: bytes, theirs: bytes) -> tuple[int, bytes]:
    for n, c in (("base", base), ("ours", ours), ("theirs", theirs)):
        (tmp / n).write_bytes(c)
    p = subprocess.run(["git", "merge-file", "-p", "-L", "ours", "-L", "base", "-L", "theirs",
                        str(tmp / "ours"), str(tmp / "base"), str(tmp / "theirs")],
                       capture_output=True, check=False)
    return p.returncode, p.stdout


# A model: sections of entries, each ["c", comment] or ["k", key, value, tight]
def base_model(draw) -> list[list]:  # type: ignore[no-untyped-def]
    model = []
    for s in range(draw(st.integers(1, 3))):
        entries: list[list] = []
        for k in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                entries.append(["c", draw(st.sampled_from(WORDS))])
            entries.append(["k", f"key{s}{k}", draw(st.sampled_from(VALUES)), False])
        model.append([f"sec{s}", entries])
    return model


def mutate(draw, model: list[list], side: str) -> list[list]:  # type: ignore[no-untyped-def]
    m = copy.deepcopy(model)
    for n in range(draw(st.integers(1, 4))):
        sec = draw(st.sampled_from(m))[1]
        i = draw(st.integers(0, len(sec) - 1))
        op = draw(st.sampled_from(["value", "add", "del", "comment", "reword", "uncomment", "space"]))
        keys = [e for e in sec if e[0] == "k"]
        if op == "value" and sec[i][0] == "k":
            sec[i][2] = draw(st.sampled_from(VALUES))
        elif op == "add":
            sec.insert(i + 1, ["k", f"{side}{n}", draw(st.sampled_from(VALUES)), False])
        elif op == "del" and len(keys) > 1:
            del sec[i]
        elif op == "comment":
            sec.insert(i, ["c", f"{side} note {n}"])
        elif op == "reword" and sec[i][0] == "c":
            sec[i][1] = sec[i][1] + f" ({side})"
        elif op == "uncomment" and sec[i][0] == "c":
            del sec[i]
        elif op == "space" and sec[i][0] == "k":
            sec[i][3] = not sec[i][3]
    return m


def render(fmt: str, model: list[list]) -> bytes:
    out: list[str] = []
    if fmt == "json":
        return (json.dumps({s: {e[1]: e[2] for e in es if e[0] == "k"} for s, es in model},
                           indent=2) + "\n").encode()
    for s, es in model:
        if fmt in ("ini", "toml"):
            out.append(f"[{s}]")
        elif fmt == "yaml":
            out.append(f"{s}:")
        for e in es:
            ind = "  " if fmt == "yaml" else ""
            if e[0] == "c":
                out.append(f"{ind}# {e[1]}")
                continue
            _k, key, val, tight = e
            if fmt == "toml":
                val = json.dumps(val)
            elif fmt == "yaml":
                val = json.dumps(val) if val.isdigit() else val
            if fmt == "env":
                out.append(f"{s.upper()}_{key.upper()}={val}")
            elif fmt == "properties":
                out.append(f"{s}.{key}{'=' if tight else ' = '}{val}")
            elif fmt == "yaml":
                out.append(f"{ind}{key}:{' ' if tight else '  '}{val}")
            else:
                out.append(f"{key}{'=' if tight else ' = '}{val}")
        if fmt != "yaml":
            out.append("")
    return ("\n".join(out) + "\n").encode()


@st.composite
def triples(draw):  # type: ignore[no-untyped-def]
    fmt = draw(st.sampled_from(sorted(FILES)))
    base = base_model(draw)
    return fmt, render(fmt, base), render(fmt, mutate(draw, base, "o")), render(fmt, mutate(draw, base, "t"))


def _parses(fmt: str, data: bytes) -> bool:
    try:
        DOCS[fmt](data)
    except Exception:  # noqa: BLE001
        return False
    return True


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(triples())
def test_clean_line_merge_is_the_result(tmp_path: Path, t) -> None:  # type: ignore[no-untyped-def]
    fmt, base, ours, theirs = t
    rc, expected = git_merge(tmp_path, base, ours, theirs)
    r = S.merge(FILES[fmt], base, ours, theirs, MergeOptions())
    if rc == 0:
        if ours not in (base, theirs) and theirs != base:
            assert r.report.action == "merged"
        assert r.content == expected
    elif r.content is not None and r.report.action == "merged":
        assert _parses(fmt, r.content)


def test_every_format_is_generated() -> None:
    assert set(FILES) == set(DOCS)
