"""The unit tests (``pytest -m unit``: pure functions, and planning logic
whose kernel calls tests/sysrec.py records) pass as a real unprivileged
user, so the marker cannot hide a test that needs root.  The rest of the
suite runs as root, against the real system."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import ROOT_DIR, requires_root


def _first_closed_ancestor(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that others may not enter."""
    for d in [*reversed(path.parents), path]:
        if not os.stat(d).st_mode & 0o001:
            return d
    return None


def _as_user(user, argv: list[str], work: Path) -> list[str]:  # type: ignore[no-untyped-def]
    """``argv`` as ``user``; where the interpreter sits below a directory only
    root may enter (a pyenv under /root), a mount namespace of the command's
    own shows the user the interpreter's prefix there and nothing else."""
    drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
            "/bin/sh", "-c", 'exec "$@"', "sh", *argv]
    prefix = Path(sys.base_prefix).resolve()
    closed = _first_closed_ancestor(prefix)
    if closed is None:
        return drop
    stage = work / "prefix"
    stage.mkdir()
    script = ('set -e; mount --bind "$1" "$3"; mount -t tmpfs -o mode=0755 tmpfs "$2"; '
              'mkdir -p "$1"; mount --bind "$3" "$1"; shift 3; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh",
            str(prefix), str(closed), str(stage), *drop]


@requires_root
def test_the_unit_tests_pass_as_an_unprivileged_user(unprivileged_user) -> None:
    work = Path(tempfile.mkdtemp(prefix="volmerge-unit-", dir="/tmp"))
    try:
        home = work / "home"
        home.mkdir()
        os.chown(home, unprivileged_user.uid, unprivileged_user.gid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLMERGE_")}
        env.update(HOME=str(home), TMPDIR=str(home), PYTHONDONTWRITEBYTECODE="1",
                   VOLMERGE_TEST_TAG=os.environ["VOLMERGE_TEST_TAG"])
        argv = [str(ROOT_DIR / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-m", "unit",
                "-p", "no:cacheprovider", "tests"]
        if not Path(argv[0]).exists():
            argv[0] = sys.executable
        p = subprocess.run(_as_user(unprivileged_user, argv, work), cwd=ROOT_DIR, env=env,
                           capture_output=True, text=True, timeout=240)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        assert " passed" in out and " skipped" not in out, out[-3000:]
    finally:  # the mounts above lived in the command's own namespace: gone with it
        shutil.rmtree(work, ignore_errors=True)

