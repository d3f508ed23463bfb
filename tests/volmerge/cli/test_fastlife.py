"""The fast ``start``/``stop``/``restart`` path (cli/fastlife.py) reads
exactly what the typer commands read, or leaves the argument list to typer."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.cli import fastlife

unit = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def _typer_parse(verb: str, args: list[str]) -> tuple[list[str], float]:
    import typer.main

    from volmerge.cli.root import app

    params = typer.main.get_command(app).commands[verb].make_context(verb, list(args)).params
    return list(params["containers"]), params.get("time_", 10.0)


@unit
def test_the_options_are_the_typer_commands():
    import typer.main

    from volmerge.cli.root import app

    cmds = typer.main.get_command(app).commands
    for verb in ("stop", "restart"):
        opts = {o for p in cmds[verb].params for o in p.opts if o.startswith("-")}
        assert opts == set(fastlife.TIME_OPTIONS)
    # start's only option (--attach) is left to typer
    assert {o for p in cmds["start"].params for o in p.opts if o.startswith("-")} == {
        "-a", "--attach"}


_names = st.sampled_from(["web", "db", "4d93faf2039e", "a.gen1", "-", "x-y"])
_times = st.sampled_from(["0", "0.5", "3", "10", "1e1", "inf", "-1", "abc", "", "2.5s"])


@st.composite
def _argv(draw):  # type: ignore[no-untyped-def]
    verb = draw(st.sampled_from(fastlife.VERBS))
    args: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["name", "name", "time", "--"]))
        if kind == "name":
            args.append(draw(_names))
        elif kind == "--":
            args.append("--")
        else:
            opt, value = draw(st.sampled_from(fastlife.TIME_OPTIONS)), draw(_times)
            if opt.startswith("--") and draw(st.booleans()):
                args.append(f"{opt}={value}")
            else:
                args += [opt, value]
    return verb, args


@unit
@given(_argv())
def test_same_arguments_as_typer(verb_args):
    verb, args = verb_args
    fast = fastlife.parse([verb, *args])
    if fast is None:  # left to typer, which reads it or reports the error itself
        return
    _root, fverb, names, timeout = fast
    assert fverb == verb
    want_names, want_time = _typer_parse(verb, args)
    assert names == want_names
    assert timeout == want_time or (math.isnan(timeout) and math.isnan(want_time))


@unit
@pytest.mark.parametrize("args", [
    ["stop"], ["start"], ["restart"],              # no name: typer prints the usage
    ["stop", "--help"], ["start", "-h", "web"],   # help
    ["start", "-a", "web"], ["start", "--attach", "web"],  # a foreground start
    ["stop", "--nope", "web"],                     # unknown option: typer's error
    ["stop", "-t"], ["stop", "web", "-t"],         # a missing value
    ["stop", "-t", "-1", "web"],                   # a value typer might read otherwise
    ["stop", "-t", "soon", "web"],                 # not a number
    ["start", "-t", "3", "web"],                   # start has no timeout
    ["stop", ""],                                  # an empty name
    ["--version"], ["ps"], ["run", "img"], ["--debug", "stop", "web"],
    ["--root", "/tmp/x", "ps"], ["--root", "stop", "web"],
])
def test_left_to_typer(args):
    assert fastlife.parse(args) is None


@unit
def test_global_root_and_environment(monkeypatch):
    monkeypatch.setenv("VOLMERGE_ROOT", "/from/env")
    assert fastlife.parse(["stop", "web"]) == ("/from/env", "stop", ["web"], 10.0)
    assert fastlife.parse(["--root", "/a", "restart", "-t", "2", "a", "b"]) == (
        "/a", "restart", ["a", "b"], 2.0)
    assert fastlife.parse(["--root=/b", "start", "--", "-x"]) == ("/b", "start", ["-x"], 10.0)
    monkeypatch.delenv("VOLMERGE_ROOT")
    assert fastlife.parse(["stop", "--time=0.5", "web"]) == (None, "stop", ["web"], 0.5)


@unit
def test_the_fast_path_does_not_import_typer():
    import subprocess
    import sys

    code = ("import sys\nfrom volmerge.cli import fastlife, state\n"
            "fastlife.parse(['stop', '-t', '3', 'web'])\nimport volmerge.context\n"
            "print('typer' in sys.modules, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_errors_are_typers_or_the_engines(cli):
    """As root: ``stop nosuch`` opens the store."""
    p = cli("stop", "-t", "soon", "web")
    assert p.returncode == 2 and re.search(r"-t|--time", p.stderr)
    p = cli("stop", "nosuch")
    assert p.returncode == 2 and p.stderr.startswith("volmerge: error: ") and "nosuch" in p.stderr
