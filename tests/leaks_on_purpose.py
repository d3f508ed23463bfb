"""A test that leaves an nft table on purpose: not collected by the suite
(the name does not start with test_); tests/test_ci_run.py runs it in a
pytest of its own to show that the leak guard catches it."""

from __future__ import annotations

import subprocess


def test_leaks_on_purpose() -> None:
    subprocess.run(["nft", "add", "table", "inet", "vmleak"], check=True)
