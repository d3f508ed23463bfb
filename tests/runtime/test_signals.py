"""Signal names and numbers for stop, kill and an image's StopSignal
(runtime/lifecycle.py).  No root."""

from __future__ import annotations

import signal

import pytest

from volmerge.runtime.errors import BadInput
from volmerge.runtime.lifecycle import parse_signal

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.mark.parametrize("given, want", [("KILL", 9), ("sigterm", 15), ("SIGINT", 2), ("9", 9),
                                         (15, 15), ("RTMIN", int(signal.SIGRTMIN))])
def test_names_and_numbers(given, want):
    assert parse_signal(given) == want


@pytest.mark.parametrize("bad", ["0", 65, "FOO", "SIG", "", "-9"])
def test_bad_signals_are_bad_input(bad):
    with pytest.raises(BadInput):
        parse_signal(bad)
