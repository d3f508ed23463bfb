"""What a clean-up deliberately ignores is logged (runtime/diag.py), and the
log is shown with --debug or VOLMERGE_LOG; no root needed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from volmerge.runtime import diag
from volmerge.runtime.errors import BadInput

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def test_ignored_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="volmerge.runtime.bundle")
    try:
        raise OSError(16, "Device or resource busy")
    except OSError as exc:
        diag.ignored("volmerge.runtime.bundle", "detaching volume data (teardown)", exc)
    (rec,) = caplog.records
    assert rec.name == "volmerge.runtime.bundle" and rec.levelno == logging.DEBUG
    assert "detaching volume data (teardown): ignored OSError" in rec.getMessage()
    assert rec.exc_info is not None


def test_a_bad_level_is_bad_input() -> None:
    with pytest.raises(BadInput, match="invalid log level 'loud'"):
        diag.configure("loud")


def test_the_leaf_does_not_import_logging() -> None:
    code = ("import sys; import volmerge.runtime.diag, volmerge.runtime.bundle; "
            "print('logging' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_volmerge_log_and_debug_reach_stderr(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, VOLMERGE_ROOT=str(tmp_path / "root"))
    bad = subprocess.run([sys.executable, "-m", "volmerge", "ps"], capture_output=True, text=True,
                         env=dict(env, VOLMERGE_LOG="loud"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "volmerge: error: invalid log level 'loud': expected one of debug, info, warning, error"]
    code = ("import logging, sys; from volmerge.cli import main; "
            "main(sys.argv[1:]); logging.getLogger('volmerge.x').debug('seen'); "
            "logging.getLogger('volmerge.x').info('info seen')")
    for args, extra, want in ((["--debug", "ps"], {}, "volmerge: DEBUG: volmerge.x: seen"),
                              (["ps"], {"VOLMERGE_LOG": "info"}, "volmerge: INFO: volmerge.x: info seen")):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           env=dict(env, **extra))
        assert p.returncode == 0 and want in p.stderr, p.stderr
