"""The fast ``pull`` path (cli/fastpull.py) reads exactly what the typer
command reads, or leaves the argument list to typer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.cli import fastpull

unit = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def _typer_parse(args: list[str]) -> tuple[str, dict[str, object]]:
    import typer.main

    from volmerge.cli.root import app

    params = dict(typer.main.get_command(app).commands["pull"].make_context(
        "pull", list(args)).params)
    return params.pop("ref"), params


@unit
def test_the_options_are_the_typer_commands():
    import typer.main

    from volmerge.cli.root import app

    cmd = typer.main.get_command(app).commands["pull"]
    opts = {o for p in cmd.params for o in p.opts if o.startswith("-")}
    assert opts == set(fastpull.VALUE_OPTIONS) | set(fastpull.QUIET_OPTIONS)
    # every keyword the fast path sets is a parameter of the typer command, same default
    defaults = {p.name: p.default for p in cmd.params if p.name != "ref"}
    assert defaults == fastpull.DEFAULTS
    assert {p.name for p in cmd.params if p.opts[0] in fastpull.VALUE_OPTIONS} == set(
        fastpull.VALUE_OPTIONS.values())


_refs = st.sampled_from(["alpine", "reg:5000/a/b:1", "x@sha256:" + "a" * 64, "-", "", "a b"])
_values = st.sampled_from(["linux/amd64", "true", "false", "/etc/certs", "", "x=y", "0"])


@st.composite
def _argv(draw):  # type: ignore[no-untyped-def]
    args: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["ref", "ref", "quiet", "value", "value", "--"]))
        if kind == "ref":
            args.append(draw(_refs))
        elif kind == "--":
            args.append("--")
        elif kind == "quiet":
            args.append(draw(st.sampled_from(fastpull.QUIET_OPTIONS)))
        else:
            opt, value = draw(st.sampled_from(sorted(fastpull.VALUE_OPTIONS))), draw(_values)
            if draw(st.booleans()):
                args.append(f"{opt}={value}")
            else:
                args += [opt, value]
    return args


@unit
@given(_argv())
def test_same_arguments_as_typer(args):
    fast = fastpull.parse(["pull", *args])
    if fast is None:  # left to typer, which reads it or reports the error itself
        return
    _root, ref, kw = fast
    assert (ref, kw) == _typer_parse(args)


@unit
@pytest.mark.parametrize("args", [
    ["pull"],                                        # no reference: typer prints the usage
    ["pull", "--help"], ["pull", "-h", "alpine"],    # help
    ["pull", "--nope", "alpine"],                    # unknown option: typer's error
    ["pull", "--platform"], ["pull", "alpine", "--cert-dir"],  # a missing value
    ["pull", "--authfile", "-q", "alpine"],          # a value typer might read otherwise
    ["pull", "-qx", "alpine"], ["pull", "--quiet=1", "alpine"],
    ["pull", "a", "b"], ["pull", "--", "a", "b"],    # two references
    ["--version"], ["ps"], ["push", "img"], ["--debug", "pull", "alpine"],
    ["--root", "/tmp/x", "ps"], ["--root", "pull", "alpine"],
])
def test_left_to_typer(args):
    assert fastpull.parse(args) is None


@unit
def test_global_root_and_environment(monkeypatch):
    d = dict(fastpull.DEFAULTS)
    monkeypatch.setenv("VOLMERGE_ROOT", "/from/env")
    assert fastpull.parse(["pull", "alpine"]) == ("/from/env", "alpine", d)
    assert fastpull.parse(["--root", "/a", "pull", "-q", "--platform", "linux/arm64", "r:1"]) == (
        "/a", "r:1", dict(d, quiet=True, platform="linux/arm64"))
    assert fastpull.parse(["--root=/b", "pull", "--", "-x"]) == ("/b", "-x", d)
    monkeypatch.setenv("VOLMERGE_ROOT", "")
    assert fastpull.parse(["pull", "--tls-verify=false", "--cert-dir", "/c", "--authfile=/f",
                           "r"]) == (None, "r", dict(d, tls_verify="false", cert_dir="/c",
                                                     authfile="/f"))


@unit
def test_the_fast_path_does_not_import_typer():
    import subprocess
    import sys

    code = ("import sys\nfrom volmerge.cli import fastpull, state, transfers\n"
            "fastpull.parse(['pull', '-q', 'alpine'])\n"
            "import volmerge.runtime.registry.pull\n"
            "print('typer' in sys.modules, 'click' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False", "False"]
