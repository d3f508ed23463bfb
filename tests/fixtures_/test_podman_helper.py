"""The podman helper (tests/podman.py) behaves alike on a machine where
podman never ran: run in a mount namespace where podman's default state
directories are empty, a load and runs use none of them, leave no
interface, nft table or mount (.ci/host-state) behind, and leave the host's
podman networks alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT_DIR
from volmerge.fixtures import REFS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# Where podman keeps its state by default: storage, run state, libpod's
# tmpdir, the netns files, CNI's IP leases and network configs.
DEFAULT_STATE = ("/var/lib/containers", "/run/containers", "/run/libpod", "/run/netns",
                 "/var/lib/cni", "/etc/cni/net.d", "/etc/containers/networks")
# podman 4.3 has no option for the directory of its blob-info cache (root:
# /var/lib/containers/cache); a cache of digests, not state.
ALLOWED = {"/var/lib/containers/cache", "/var/lib/containers/cache/blob-info-cache-v1.boltdb"}

# A network of the host's (as `podman network create keep` writes it): a
# `podman system reset` on any --root would delete it.
KEEP = json.dumps({"cniVersion": "0.4.0", "name": "keep", "plugins": [
    {"type": "bridge", "bridge": "cni-podman9", "isGateway": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.9.0/24"}]]}}]})

SCRIPT = """
from pathlib import Path
from tests.podman import Podman
p = Podman(Path({base!r}))
try:
    p("load", "-i", {archive!r})
    p.run({ref!r}, "/bin/busybox", "true")
    assert p.run({ref!r}, "echo", "ok").stdout == "ok\\n"
    p.run("-d", "--name", "bg", {ref!r}, "sleep", "60", rm=False)
finally:
    p.close()
"""


def test_podman_uses_no_default_state(tmp_path: Path, fixture_image) -> None:
    # Made by any podman's first use (ALLOWED): made here first, so a podman
    # of a parallel session (pytest-xdist) making it meanwhile is no change.
    os.makedirs("/var/lib/containers/cache", exist_ok=True)
    existed = {d for d in DEFAULT_STATE if os.path.isdir(d)}
    py = SCRIPT.format(base=str(tmp_path / "podman"), archive=str(fixture_image("busybox")),
                       ref=REFS["busybox"])
    snap = tmp_path / "state"
    sh = (f"for d in {' '.join(sorted(existed))}; do mount -t tmpfs fresh $d; done\n"
          "[ ! -d /etc/cni/net.d ] || echo \"$KEEP\" > /etc/cni/net.d/keep.conflist\n"
          f".ci/host-state snapshot {snap}\n"
          f"{sys.executable} -c \"$PY\"\n"
          f".ci/host-state compare {snap}\n"
          f"find {' '.join(sorted(existed))} -mindepth 1\n")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-euc", sh],
                          cwd=ROOT_DIR, env=dict(os.environ, PY=py, KEEP=KEEP), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    kept = {"/etc/cni/net.d/keep.conflist"} if "/etc/cni/net.d" in existed else set()
    assert set(proc.stdout.split()) - ALLOWED == kept
    assert {d for d in DEFAULT_STATE if os.path.isdir(d)} == existed  # none created
    assert not (tmp_path / "podman").exists()
