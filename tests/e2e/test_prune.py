"""``volmerge prune``: after several upgrades the oldest generations go (their
parked containers, rows, journals, snapshot tags), the store shrinks, and a
rollback to the kept previous generation still works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import APP, volume_digest


def du(root: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", "-x", str(root)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def _upgraded_three_times(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    for i, v in enumerate((2, 1, 2)):
        vm("exec", "app", "sh", "-c", f"head -c 1000000 /dev/urandom > /data/blob; echo {i} > /data/n",
           check=True)
        vm("upgrade", "app", "--to", APP[v], "--health-timeout", "0.3", check=True)


def _names(vm) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(c["name"] for c in json.loads(vm("ps", "-a", "--json").stdout))


def _state(vm) -> tuple:  # type: ignore[no-untyped-def]
    hist = json.loads(vm("history", "app", "--json").stdout)
    vol = json.loads(vm("volume", "inspect", "app-data", "--json").stdout)
    return (hist, _names(vm),
            json.dumps(vol, sort_keys=True, default=str), volume_digest(vm.root, "app-data"))


def test_prune_keeps_two_generations_and_rollback_still_works(vm) -> None:  # type: ignore[no-untyped-def]
    _upgraded_three_times(vm)
    before = _state(vm)
    gens = [h for h in before[0] if h["type"] == "generation"]
    assert [(g["generation"], g["state"]) for g in gens] == [
        (1, "previous"), (2, "previous"), (3, "previous"), (4, "current")]

    p = vm("prune", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    (rep,) = json.loads(p.stdout)
    assert rep["keep"] == [3, 4] and rep["generations"] == [1, 2] and rep["dry_run"]
    assert sorted(c["name"] for c in rep["containers"]) == ["app.gen1", "app.gen2"]
    assert len(rep["snapshots"]["app-data"]) == 4  # pre/post of the upgrades that left 1 and 2
    assert _state(vm) == before  # a dry run changes nothing
    text = vm("prune", "--dry-run", "app")
    assert text.returncode == 0 and "app.gen1" in text.stdout and "Would remove 2" in text.stdout

    size = du(vm.root)
    p = vm("prune", "--keep", "2", "app", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["generations"] == [1, 2]
    hist = json.loads(vm("history", "app", "--json").stdout)
    assert [h["generation"] for h in hist if h["type"] == "generation"] == [3, 4]
    assert len([h for h in hist if h["type"] == "upgrade"]) == 2  # those that made 3 and 4
    names = _names(vm)
    assert "app.gen1" not in names and "app.gen2" not in names and "app.gen3" in names
    tags = [s["tag"] for s in json.loads(
        vm("volume", "inspect", "app-data", "--json").stdout)["snapshots"] if s["tag"]]
    assert len(tags) == 2, tags  # pre and post of the upgrade that left 3 and made 4
    # The squashed layers replace ones the running container's overlay still
    # stacks: they go once it is unmounted and the next command collects.
    vm("stop", "app", check=True)
    vm("volume", "ls", check=True)
    assert du(vm.root) < size - 1_500_000  # at least two of the three 1 MB blobs
    assert "Nothing to prune" in vm("prune").stdout

    data = volume_digest(vm.root, "app-data")
    p = vm("rollback", "app", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["to_gen"] == 3
    c = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert c["image"] == APP[1] and c["state"] == "running"
    after = volume_digest(vm.root, "app-data")
    assert after["blob"] == data["blob"]  # generation 3 was left after the last blob


@pytest.mark.parametrize(("args", "needle"), [
    (["prune", "--keep", "0"], "--keep"),
    (["prune", "--keep", "-1"], "--keep"),
    (["prune", "ghost"], "ghost"),
])
def test_prune_bad_input_exit_2(vm, args: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", check=True)
    before = _state(vm)
    p = vm(*args)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
    assert _state(vm) == before


def test_prune_refused_while_an_upgrade_runs(vm) -> None:  # type: ignore[no-untyped-def]
    from volmerge.runtime.store import Store

    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    st = Store(vm.root)
    try:
        with st.lock("upgrade-app", blocking=False):
            p = vm("prune", "app")
    finally:
        st.close()
    assert p.returncode == 2 and "cannot prune app" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1


def test_rollback_after_a_rollback_keeps_data_written_in_between(vm) -> None:  # type: ignore[no-untyped-def]
    """Generation 1 is left twice (upgrades 2 and 3): rolling back to it from 3
    returns to the state of the second leave, not the first, so that what
    generation 1 wrote between the two (after the first rollback) stays."""
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", check=True)
    vm("rollback", "app", check=True)
    vm("exec", "app", "sh", "-c", "echo kept > /data/between", check=True)
    vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", check=True)
    p = vm("rollback", "app", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["to_image"] == APP[1]
    assert vm("exec", "app", "cat", "/data/between").stdout == "kept\n"


def test_rehearsals_and_removed_containers_leave_no_lock_files(vm) -> None:  # type: ignore[no-untyped-def]
    """Found by bench/soak.py: each rehearsal left the lock files of its clone
    volume and of its copy of the container."""
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    locks = vm.root / "locks"
    vm("upgrade", "app", "--to", APP[2], "--rehearse", "--health-timeout", "0.3", check=True)
    before = set(p.name for p in locks.iterdir())  # upgrade-app.lock stays: app stays
    for _ in range(2):
        vm("upgrade", "app", "--to", APP[2], "--rehearse", "--health-timeout", "0.3", check=True)
    vm("run", "--rm", APP[1], "true", check=True)
    assert set(p.name for p in locks.iterdir()) - before == set()


PR = "localhost/volmerge-test/pruned:1"


def _build(out: Path, n: int) -> Path:
    """Build ``n`` of the image tagged PR (each load moves the tag to it)."""
    from volmerge.demoimages.recipes import busybox_entries
    from volmerge.fixtures import Dir, build_image

    script = "trap 'exit 0' TERM; while :; do sleep 0.05; done"
    return build_image(out / f"pr{n}.tar",
                       [busybox_entries(), {"data": Dir(0o755), "data/build": f"{n}\n"}],
                       {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", script],
                        "Volumes": {"/data": {}}}, PR)


def _image_id(vm, ref: str) -> str:  # type: ignore[no-untyped-def]
    return json.loads(vm("image", "inspect", ref, "--json", check=True).stdout)["Id"] \
        .removeprefix("sha256:")


def test_prune_removes_the_images_only_pruned_generations_ran(vm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each rebuild of PR takes the tag from the image the service runs; once
    the generations that ran an untagged image are pruned, the image goes -
    unless the user tagged it or another container uses it (podman's rule:
    a name is the user's; an image in use stays)."""
    ids = []
    for n in range(4):
        vm("image", "load", str(_build(tmp_path, n)), check=True)
        ids.append(_image_id(vm, PR))
        if n == 0:
            vm("run", "-d", "--name", "papp", "-v", "papp-data:/data", PR, check=True)
        else:
            vm("upgrade", "papp", "--to", PR, "--health-timeout", "0.3", check=True)
    vm("image", "tag", ids[1], "localhost/mine:kept", check=True)   # the user's name
    vm("create", "--name", "other", f"sha256:{ids[2]}", check=True)  # used elsewhere
    p = vm("prune", "papp", "--dry-run", "--json", check=True)
    (rep,) = json.loads(p.stdout)
    assert rep["generations"] == [1, 2] and rep["keep"] == [3, 4]
    assert rep["images"] == [{"id": ids[0], "ref": PR}], rep["images"]
    text = vm("prune", "papp", "--dry-run", check=True).stdout
    assert f"{PR} ({ids[0][:12]})" in text and "image" in text
    vm("image", "inspect", f"sha256:{ids[0]}", check=True)  # a dry run removes nothing

    (rep,) = json.loads(vm("prune", "papp", "--json", check=True).stdout)
    assert [i["id"] for i in rep["images"]] == [ids[0]]
    assert vm("image", "inspect", f"sha256:{ids[0]}").returncode != 0
    for kept in ids[1:]:  # tagged by the user, used by `other`, run by generations 3 and 4
        vm("image", "inspect", f"sha256:{kept}", check=True)
    # generation 3 ran ids[2]; pruning it later keeps the image `other` uses
    (rep,) = json.loads(vm("prune", "papp", "--keep", "1", "--json", check=True).stdout)
    assert rep["generations"] == [3] and rep["images"] == []
    vm("image", "inspect", f"sha256:{ids[2]}", check=True)
    assert vm("exec", "papp", "cat", "/data/build", check=True).stdout == "3\n"  # still runs
