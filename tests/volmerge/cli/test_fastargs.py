"""cli/fastargs.py, the reader the typer-free commands share. Pure: no root."""

from __future__ import annotations

import pytest

from volmerge.cli.fastargs import command, options

TABLE = {"-q": ("quiet", "flag"), "--name": ("name", "str"), "-n": ("count", "int"),
         "-t": ("time", "float"), "-e": ("env", "list")}


def test_the_root_before_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOLMERGE_ROOT", raising=False)
    assert command(["stop", "a"], ("stop",)) == (None, "stop", ["a"])
    assert command(["--root", "/r", "stop", "a"], ("stop",)) == ("/r", "stop", ["a"])
    assert command(["--root=/r", "stop"], ("stop",)) == ("/r", "stop", [])
    monkeypatch.setenv("VOLMERGE_ROOT", "/env")
    assert command(["stop"], ("stop",)) == ("/env", "stop", [])
    for other in (["--root=", "stop"], ["--root", "-x", "stop"], ["--debug", "stop"],
                  ["ps"], ["--root", "/r"], []):
        assert command(other, ("stop",)) is None, other


def test_options_as_typer_reads_them() -> None:
    assert options(["-q", "x", "--name=a", "-n", "3", "-e", "A=1", "-e", "B", "-t", "0.5"],
                   TABLE, interspersed=True) == (
        ["x"], {"quiet": True, "name": "a", "count": 3, "env": ["A=1", "B"], "time": 0.5})
    assert options(["img", "-q"], TABLE, interspersed=False) == (["img", "-q"], {})
    assert options(["-q", "--", "-n", "x"], TABLE, interspersed=True) == (
        ["-n", "x"], {"quiet": True})
    assert options(["-", "-q"], TABLE, interspersed=True) == (["-"], {"quiet": True})


@pytest.mark.parametrize("rest", [
    ["--help"], ["-qn", "1"], ["--quiet"], ["-q=1"], ["--name"], ["--name", "-x"],
    ["-n", "three"], ["-t", "soon"], ["-n", "1.5"],
])
def test_what_it_cannot_read_exactly_goes_to_typer(rest: list[str]) -> None:
    assert options(rest, TABLE, interspersed=True) is None
