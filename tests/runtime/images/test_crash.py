"""A load killed mid-extraction leaves nothing a reader could see, and the
next open of the store sweeps what it left (architecture.md, principle 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .builders import E, image_files, layer_tar, write_dir
from .conftest import store_is_empty


def test_killed_load_is_swept(root: Path, tmp_path: Path, cli) -> None:
    entries = [E("d", "dir")] + [E(f"d/f{i}", data=os.urandom(2048)) for i in range(4000)]
    src = write_dir(image_files([layer_tar(entries)], compression="none"), tmp_path / "layout")
    env = dict(os.environ, VOLMERGE_ROOT=str(root))
    p = subprocess.Popen([sys.executable, "-m", "volmerge", "image", "load", str(src)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    caught = False
    while time.monotonic() < deadline and p.poll() is None:
        tmp = root / "tmp"
        if tmp.is_dir() and any(n.startswith("layer-") for n in os.listdir(tmp)):
            caught = True
            break
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    if not caught:  # the machine was too fast for us: at least it finished cleanly
        assert cli("image", "ls", "-q").stdout.strip()
        return
    assert os.listdir(root / "layers") == []  # never a partial layer in place
    r = cli("image", "ls", "--json")  # opening the store sweeps
    assert r.returncode == 0 and r.stdout.strip() == "[]"
    store_is_empty(root)
