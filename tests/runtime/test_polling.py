"""runtime.polling: the one wait helper (no root needed)."""

from __future__ import annotations

import errno
import time

import pytest

from volmerge.runtime.polling import retry, wait_until

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def test_wait_until_returns_the_first_truthy_value():
    calls = []

    def check():
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    assert wait_until(check, timeout=5, interval=0.001) == "ready"
    assert len(calls) == 3


def test_wait_until_times_out_with_none():
    t0 = time.monotonic()
    assert wait_until(lambda: False, timeout=0.2, interval=0.01, max_interval=0.02) is None
    assert 0.2 <= time.monotonic() - t0 < 2


def test_wait_until_passes_exceptions_through():
    def check():
        raise RuntimeError("container exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(check, timeout=5)


def test_retry_succeeds_after_passing_failures():
    left = [2]

    def op():
        if left[0]:
            left[0] -= 1
            raise OSError(errno.EBUSY, "busy")
        return 42

    between = []
    assert retry(op, when=lambda e: isinstance(e, OSError), timeout=5, interval=0.001,
                 between=lambda: between.append(1)) == 42
    assert between == [1, 1]


def test_retry_reraises_the_last_error_on_timeout_and_others_at_once():
    def busy():
        raise OSError(errno.EBUSY, "busy")

    with pytest.raises(OSError, match="busy"):
        retry(busy, when=lambda e: isinstance(e, OSError), timeout=0.1, interval=0.01)
    calls = []

    def other():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        retry(other, when=lambda e: isinstance(e, OSError), timeout=5)
    assert calls == [1]


def test_attempts_limit():
    calls = []

    def op():
        calls.append(1)
        raise OSError("x")

    with pytest.raises(OSError):
        retry(op, when=lambda e: True, attempts=3, interval=0.001)
    assert len(calls) == 3


def test_importing_polling_does_not_import_tenacity():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, volmerge.runtime.polling; "
                          "print('tenacity' in sys.modules)"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
