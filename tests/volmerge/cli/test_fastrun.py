"""The fast ``run`` path reads exactly what the typer command reads, or
leaves the argument list to typer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.cli import fastrun

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

IMAGE = "localhost/volmerge-fixture/busybox:latest"


def _typer_run():  # type: ignore[no-untyped-def]
    import typer.main

    from volmerge.cli.root import app

    return typer.main.get_command(app).commands["run"]


def _typer_parse(args: list[str]) -> dict:
    params = dict(_typer_run().make_context("run", list(args)).params)
    return {k: (list(v) or None) if isinstance(v, (list, tuple)) else v for k, v in params.items()}


def _fast_parse(args: list[str]) -> dict | None:
    parsed = fastrun.parse(["run", *args])
    if parsed is None:
        return None
    _root, image, command, kw = parsed
    return {**kw, "image": image, "command": command or None}


def _is_int(p) -> bool:  # type: ignore[no-untyped-def]
    t = getattr(p, "type", None)  # click's parameter type (typer < 0.29)
    if t is not None:
        return t.name in ("integer", "int")
    return p.type_descriptor.annotation is int  # typer 0.29


def test_the_table_is_the_typer_command():
    kinds = {}
    for p in _typer_run().params:
        if p.name in ("image", "command"):
            continue
        for opt in p.opts:
            if getattr(p, "is_flag", False):
                kind = "flag"
            elif getattr(p, "multiple", False):
                kind = "list"
            elif _is_int(p):
                kind = "int"
            else:
                kind = "str"
            kinds[opt] = (p.name, kind)
    assert kinds == fastrun.OPTIONS


_values = st.text(alphabet="abcXYZ019=:/._ ", min_size=0, max_size=8)
_ints = st.integers(min_value=-5, max_value=10**6)


@st.composite
def _argv(draw):  # type: ignore[no-untyped-def]
    args: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        opt = draw(st.sampled_from(sorted(fastrun.OPTIONS)))
        kind = fastrun.OPTIONS[opt][1]
        if kind == "flag":
            args.append(opt)
            continue
        value = str(draw(_ints)) if kind == "int" else draw(_values)
        if opt.startswith("--") and draw(st.booleans()):
            args.append(f"{opt}={value}")
        else:
            args += [opt, value]
    if draw(st.booleans()):
        args.append("--")
    args.append(draw(st.sampled_from([IMAGE, "busybox", "x"])))
    args += draw(st.lists(st.sampled_from(["sh", "-c", "echo hi", "--rm", "-e", "--", "-"]), max_size=4))
    return args


@given(_argv())
def test_same_arguments_as_typer(args):
    fast = _fast_parse(args)
    if fast is None:  # left to typer: here only a value that looks like an option (-5)
        assert any(re.fullmatch(r"-\d+", a) for a in args)
        return
    assert fast == _typer_parse(args)


@pytest.mark.parametrize("args", [
    ["run"],                                  # no image: typer prints the usage
    ["run", "--help"], ["run", "-h", IMAGE],  # help
    ["run", "--nope", IMAGE],                 # unknown option: typer's error
    ["run", "-it", IMAGE],                    # short options run together
    ["run", "-e"],                            # a missing value
    ["run", "--name", "-x", IMAGE],           # a value typer might read otherwise
    ["run", "--health-retries", "three", IMAGE],  # not an integer
    ["run", "--rm=yes", IMAGE],               # a flag with a value
    ["--version"], ["ps"], ["image", "ls"],   # other commands
    ["--root", "/tmp/x", "ps"], ["--nope", "run", IMAGE],
])
def test_left_to_typer(args):
    assert fastrun.parse(args) is None


def test_global_root_and_environment(monkeypatch):
    monkeypatch.setenv("VOLMERGE_ROOT", "/from/env")
    assert fastrun.parse(["run", IMAGE])[0] == "/from/env"
    assert fastrun.parse(["--root", "/a", "run", IMAGE])[0] == "/a"
    assert fastrun.parse(["--root=/b", "run", "--rm", IMAGE, "true"])[:3] == ("/b", IMAGE, ["true"])
    monkeypatch.delenv("VOLMERGE_ROOT")
    assert fastrun.parse(["run", IMAGE])[0] is None


@pytest.mark.parametrize("args, message", [
    (["run", "--health-retries", "three", IMAGE], "--health-retries"),
    (["run", "--nope", IMAGE], "--nope"),
])
def test_bad_input_gets_typers_error(cli, args, message):
    p = cli(*args)
    assert p.returncode == 2
    assert message in p.stderr


def test_help_comes_from_typer(cli):
    p = cli("run", "--help")
    assert p.returncode == 0
    assert "Run a command in a new container" in p.stdout and "--health-retries" in p.stdout


def test_the_fast_path_does_not_import_typer():
    import subprocess
    import sys

    code = ("import sys\nfrom volmerge.cli import fastrun\n"
            "fastrun.parse(['run', '--rm', '-e', 'A=1', 'img', 'true'])\n"
            "import volmerge.cli.runopts, volmerge.cli.state\n"
            "print('typer' in sys.modules, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
