"""bench/bench_upgrade.py's comparison with podman (pure parts): the
ratios it prints and writes to --json, and the configuration that keeps
podman's store and networks apart from the host's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_upgrade import _podman, _podman_line
from tests.podman import podman_conf as _conf

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def _side(ms: float) -> dict:
    return {"downtime_ms": ms}


def test_ratios_against_podman() -> None:
    summary = {"upgrade": {"volmerge": _side(150.0), "manual": _side(250.0),
                           "manual-podman": _side(600.0)},
               "restart": {"floor": _side(160.0), "floor-podman": _side(480.0)}}
    pod = _podman(summary)
    assert pod["of_manual_podman"] == pytest.approx(0.25)
    assert pod["floor_podman_of_floor"] == pytest.approx(3.0)
    line = _podman_line(pod)
    assert "volmerge = 0.25 x manual-podman" in line
    assert "floor-podman) 480 ms, volmerge's (floor) 160 ms -> 3.00 x" in line


def test_only_what_the_run_has() -> None:
    assert _podman({"upgrade": {"volmerge": _side(150.0), "manual": _side(250.0)}}) == {}
    pod = _podman({"restart": {"floor-podman": _side(480.0)}})
    assert pod == {"floor_podman_ms": 480.0}
    assert "manual-podman" not in _podman_line(pod)


def test_podman_config_stays_below_its_base(tmp_path: Path) -> None:
    containers, storage = _conf(tmp_path, Path("/run/vm-pb-x"), "overlay")
    assert f'network_config_dir = "{tmp_path}/networks"' in containers
    assert 'cgroup_manager = "cgroupfs"' in containers and 'runtime = "runc"' in containers
    assert "netns" not in containers  # podman's default network: the bridge
    assert f'graphroot = "{tmp_path}/root"' in storage
    assert 'runroot = "/run/vm-pb-x"' in storage and 'driver = "overlay"' in storage
