""".ci/run: lint before the tests, fails when either fails, and fails when the
suite left an interface, nft table or mount in the namespaces it ran in
(.ci/host-state).  Everything here runs in network and mount namespaces the
test makes (``unshare``): the host's are never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT_DIR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# Leaves one of each kind: a bridge, an nft table, a tmpfs mount stacked twice.
LEAK = ("ip link add vmleak0 type bridge; nft add table inet vmleak; "
        "mkdir -p {d}; mount -t tmpfs leak {d}; mount -t tmpfs leak {d}")


def in_own_namespaces(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                           "bash", "-euc", script],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env)


def test_host_state_compare_lists_what_was_left(tmp_path: Path) -> None:
    snap, mnt = tmp_path / "before", tmp_path / "mnt"
    proc = in_own_namespaces(f".ci/host-state snapshot {snap}; .ci/host-state compare {snap}; "
                             f"{LEAK.format(d=mnt)}; .ci/host-state compare {snap}")
    assert proc.returncode == 1, proc.stderr
    left = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert left == sorted(["interface vmleak0", "nft table inet vmleak",
                           f"mount {mnt}", f"mount {mnt}"])


def test_host_state_ignores_what_was_removed(tmp_path: Path) -> None:
    snap = tmp_path / "before"
    proc = in_own_namespaces(f"ip link add vmgone0 type bridge; .ci/host-state snapshot {snap}; "
                             f"ip link del vmgone0; .ci/host-state compare {snap}")
    assert proc.returncode == 0 and proc.stderr == ""


def test_host_state_usage() -> None:
    proc = subprocess.run([ROOT_DIR / ".ci" / "host-state", "compare"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("usage:")


@pytest.mark.parametrize(("lint", "test", "want_rc", "want_log", "want_err"), [
    ("true", "true", 0, "lint\ntest\n", None),
    ("true", "exit 3", 3, "lint\ntest\n", None),
    ("exit 2", "true", 2, "lint\n", None),
    ("true", "LEAK", 1, "lint\ntest\n", "interface vmleak0"),
    ("true", "LEAK; exit 3", 3, "lint\ntest\n", "nft table inet vmleak"),
], ids=["pass", "test-fails", "lint-fails", "leak", "leak-and-test-fails"])
def test_ci_run(tmp_path: Path, lint: str, test: str, want_rc: int, want_log: str,
                want_err: str | None) -> None:
    """``make`` is a stand-in that logs its target and does what the case says."""
    bin_, log = tmp_path / "bin", tmp_path / "make.log"
    bin_.mkdir()
    (bin_ / "make").write_text(
        "#!/bin/bash\n"
        f'echo "$1" >> {log}\n'
        f'case "$1" in lint) {lint} ;; test) {test.replace("LEAK", LEAK.format(d=tmp_path / "m"))} ;; esac\n')
    (bin_ / "make").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", CI="true")
    proc = in_own_namespaces(".ci/run", env=env)
    assert proc.returncode == want_rc, proc.stderr
    assert log.read_text() == want_log
    if want_err:
        assert want_err in proc.stderr
    else:
        assert "left behind" not in proc.stderr


# --- the suite's own leak guard (tests/conftest.py) ----------------------------------


def test_leak_guard_catches_nft_table() -> None:
    """A pytest run of its own (in namespaces of its own, tests/conftest.py)
    of a test that leaves an nft table fails, names it, and removes it."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
         "tests/leaks_on_purpose.py"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "test leaked: {'nft tables': ['inet vmleak']}" in proc.stdout
    assert "1 passed, 1 error" in proc.stdout
