"""volmerge.autoupdate.run called as a library, without a progress callback
(the CLI always passes one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import APP, _app_image, cli_session
from volmerge.autoupdate import LABEL

FOLLOW = "localhost/volmerge-test/app:library"

# run() without progress= used to hand None to upgrade(), which calls it:
# a TypeError (a traceback) once the upgrade had committed
SCRIPT = """
import sys
from volmerge.autoupdate import run
from volmerge.context import Context
from volmerge.runtime.store import Store
print(" ".join(u.updated for u in run(Context(Store(sys.argv[1])))))
"""


def test_run_without_progress_upgrades(tmp_path: Path, own_netns) -> None:
    root = tmp_path / "root"
    try:
        with cli_session(root) as vm:
            for v in (1, 2):
                vm("image", "load", str(_app_image(tmp_path / f"app{v}.tar", v)), check=True)
            vm("image", "tag", APP[1], FOLLOW, check=True)
            # a health check: without one the new container must stay up 60 s
            vm("run", "-d", "--name", "app", "--network", "none", "-l", f"{LABEL}=local",
               "--health-cmd", "true", "--health-interval", "0.2s", FOLLOW, check=True)
            vm("image", "tag", APP[2], FOLLOW, check=True)
            p = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], capture_output=True,
                               text=True, timeout=180)
            assert p.returncode == 0, p.stderr
            assert p.stdout.split() == ["true"]
    finally:
        from volmerge.runtime import sys as rsys

        rsys.umount_tree(root)
