"""compose verbs given bad input: exit 2, one line.  ``upgrade
--health-timeout`` that is no positive number of seconds is refused before
the project is even looked at (NaN used to pass the check and reach the
upgrade's health wait); a service the file does not define is named."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_health_timeout_checked(cli, tmp_path: Path, value: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  web:\n    image: localhost/nosuch:1\n")
    p = cli("compose", "-f", str(f), "upgrade", "--health-timeout", value)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr == "volmerge: error: --health-timeout must be positive\n"


@pytest.mark.parametrize("argv", [["logs", "nosuch"], ["exec", "nosuch", "true"]])
def test_unknown_service(cli, tmp_path: Path, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    """``logs`` printed nothing (exit 0) and ``exec`` said 'not running' for a
    service the file does not define; every other verb says so."""
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  web:\n    image: localhost/nosuch:1\n")
    p = cli("compose", "-f", str(f), *argv)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr == "volmerge: error: no such service: nosuch\n"
