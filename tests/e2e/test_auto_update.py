"""``volmerge auto-update``: labelled containers follow their image reference
with a whole upgrade, data merged, failures rolled back with the data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from volmerge.autoupdate import LABEL, policy_of

from .conftest import APP

FOLLOW = "localhost/volmerge-test/app:follow"
ROOT = Path(__file__).resolve().parent.parent.parent


def _report(vm, *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    p = vm("auto-update", "--json", *args)
    assert p.stdout, p.stderr
    return p.returncode, {u["container"]: u for u in json.loads(p.stdout)}


def _image_id(vm, ref: str) -> str:  # type: ignore[no-untyped-def]
    info = json.loads(vm("image", "inspect", ref, "--json", check=True).stdout)
    info = info[0] if isinstance(info, list) else info
    return str(info.get("Id") or info.get("id")).removeprefix("sha256:")


def test_local_policy_upgrades_with_the_data_and_leaves_others(vm) -> None:  # type: ignore[no-untyped-def]
    vm("image", "tag", APP[1], FOLLOW, check=True)
    vm("run", "-d", "--name", "app", "--network", "none", "-l", f"{LABEL}=local",
       "-v", "app-data:/data", FOLLOW, check=True)
    vm("run", "-d", "--name", "plain", "--network", "none", FOLLOW, check=True)
    vm("exec", "app", "sh", "-c", "echo mine > /data/mine.txt", check=True)

    code, rep = _report(vm)  # nothing new yet
    assert code == 0 and rep["app"]["updated"] == "false" and "plain" not in rep

    vm("image", "tag", APP[2], FOLLOW, check=True)  # the reference moves on
    code, rep = _report(vm, "--dry-run")
    assert code == 0 and rep["app"]["updated"] == "pending"
    assert rep["app"]["current"] == _image_id(vm, APP[1])
    assert rep["app"]["new"] == _image_id(vm, APP[2])
    assert rep["app"]["summary"].get("conflicts", 0) == 0
    assert json.loads(vm("inspect", "app", "--json").stdout)[0]["image_id"] == \
        _image_id(vm, APP[1])  # the dry run changed nothing

    code, rep = _report(vm)
    assert code == 0, rep
    assert rep["app"]["updated"] == "true" and "plain" not in rep
    info = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert info["image_id"] == _image_id(vm, APP[2])
    out = vm("exec", "app", "sh", "-c", "cat /data/mine.txt /data/added.txt", check=True).stdout
    assert out == "mine\nnew in v2\n"  # the operator's file kept, the release's file added
    plain = json.loads(vm("inspect", "plain", "--json").stdout)[0]
    assert plain["image_id"] == _image_id(vm, APP[1])  # not labelled: not touched

    code, rep = _report(vm)  # up to date now
    assert code == 0 and rep["app"]["updated"] == "false"


def test_a_failing_update_is_rolled_back_with_its_data(vm) -> None:  # type: ignore[no-untyped-def]
    vm("image", "tag", APP[1], FOLLOW, check=True)
    # healthy only while the release has not added /data/added.txt (v2 adds it)
    vm("run", "-d", "--name", "app", "--network", "none", "-l", f"{LABEL}=local",
       "--health-cmd", "test ! -e /data/added.txt", "--health-interval", "0.2s",
       "-v", "app-data:/data", FOLLOW, check=True)
    vm("exec", "app", "sh", "-c", "echo mine > /data/mine.txt", check=True)
    vm("image", "tag", APP[2], FOLLOW, check=True)
    p = vm("auto-update", "--no-rollback")  # podman's flag: refused, nothing tried
    assert p.returncode == 2 and "--no-rollback is refused" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not p.stdout
    assert json.loads(vm("inspect", "app", "--json").stdout)[0]["image_id"] == \
        _image_id(vm, APP[1])
    code, rep = _report(vm, "-q", "--rollback")  # podman's default, said out loud
    assert code == 1 and rep["app"]["updated"] == "rolled back", rep
    info = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert info["image_id"] == _image_id(vm, APP[1]) and info["state"] == "running"
    out = vm("exec", "app", "sh", "-c", "cat /data/mine.txt; ls /data", check=True).stdout
    assert out.startswith("mine\n") and "added.txt" not in out.split()


def test_label_from_the_image_and_unknown_policies() -> None:
    assert policy_of({}, {LABEL: "registry"}) == "registry"
    assert policy_of({LABEL: "local"}, {LABEL: "registry"}) == "local"  # the container's wins
    assert policy_of({LABEL: "image"}, {}) == "registry"  # podman's older name
    assert policy_of({LABEL: "disabled"}, {LABEL: "registry"}) is None
    assert policy_of({}, {}) is None
    assert policy_of({LABEL: "sometimes"}, {}) == "unknown:sometimes"


def test_unknown_policy_is_reported_failed(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "odd", "--network", "none", "-l", f"{LABEL}=sometimes", APP[1],
       check=True)
    code, rep = _report(vm)
    assert code == 1 and rep["odd"]["updated"] == "failed"
    assert "unknown io.containers.autoupdate policy 'sometimes'" in rep["odd"]["detail"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    import sys

    exe = Path(sys.executable).parent / "volmerge"
    for name in ("volmerge-auto-update.service", "volmerge-auto-update.timer"):
        text = (ROOT / "contrib" / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/volmerge", str(exe)))
    p = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
