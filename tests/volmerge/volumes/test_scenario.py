"""The issue's scenario through the library: seed, write, snapshot, write
more, rollback, clone and diverge."""

from __future__ import annotations

import os
from pathlib import Path

from volmerge.volumes import VolumeManager

from .helpers import digest, seed_dir, write


def test_seed_write_snapshot_write_rollback(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    merged = vm.attach("db", "c1", seed)
    assert digest(merged) == digest(seed)
    write(merged, {"etc/app.conf": "port = 8080\n", "data/new.bin": os.urandom(5000),
                   "data/old": None})
    before = digest(merged)
    vm.detach("db", "c1")
    snap = vm.snapshot("db", tag="v1")
    assert snap.tag == "v1"
    with vm.view("db") as v:
        assert digest(v) == before
    vm.attach("db", "c1", seed)
    write(merged, {"etc/app.conf": "port = 9\n", "data/more": "x" * 100, "etc/keep.conf": None})
    assert digest(merged) != before
    vm.detach("db", "c1")
    vm.rollback("db", to="v1")
    with vm.view("db") as v:
        assert digest(v) == before
    # the seed stays exactly what the image had: the base of the next merge
    assert digest(vm.base_path("db")) == digest(seed)


def test_clone_diverges_and_shares_frozen_layers(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    vm.create("orig", seed)
    write(vm.live_upper("orig"), {"data/x": "1"})
    vm.snapshot("orig", tag="t")
    c = vm.clone("orig", "copy", from_="t")
    assert [s.tag for s in c.snapshots] == ["t"]
    o = vm.get("orig")
    assert {layer.id for layer in o.layers if layer.role != "live"} <= {layer.id for layer in c.layers}
    write(vm.live_upper("copy"), {"data/x": "clone"})
    write(vm.live_upper("orig"), {"data/y": "orig"})
    with vm.view("orig") as v:
        assert (v / "data/x").read_text() == "1" and (v / "data/y").exists()
    with vm.view("copy") as v:
        assert (v / "data/x").read_text() == "clone" and not (v / "data/y").exists()
    # removing the original keeps the shared layers alive for the clone
    vm.remove("orig")
    with vm.view("copy", at="t") as v:
        assert (v / "data/x").read_text() == "1"


def test_clone_of_current_state_freezes_live_layer(vm: VolumeManager) -> None:
    vm.create("a")
    write(vm.live_upper("a"), {"f": "live data"})
    vm.clone("a", "b")
    with vm.view("b") as v:
        assert (v / "f").read_text() == "live data"
    assert len(vm.snapshots("a")) == 1


def test_rollback_keep_as_keeps_discarded_state(vm: VolumeManager) -> None:
    vm.create("v")
    write(vm.live_upper("v"), {"a": "1"})
    vm.snapshot("v", tag="one")
    write(vm.live_upper("v"), {"a": "2"})
    vm.snapshot("v", tag="two")
    write(vm.live_upper("v"), {"a": "3"})
    vm.rollback("v", to="one", keep_as="v-discarded")
    with vm.view("v") as v:
        assert (v / "a").read_text() == "1"
    with vm.view("v-discarded") as v:
        assert (v / "a").read_text() == "3"
    assert [s.tag for s in vm.snapshots("v")] == ["one"]
    assert [s.tag for s in vm.snapshots("v-discarded")] == ["one", "two"]


def test_rollback_to_seed_and_latest(vm: VolumeManager, tmp_path: Path) -> None:
    seed = seed_dir(tmp_path)
    vm.create("v", seed)
    write(vm.live_upper("v"), {"n": "1"})
    vm.snapshot("v")
    write(vm.live_upper("v"), {"n": "2"})
    vm.rollback("v")  # latest snapshot
    with vm.view("v") as v:
        assert (v / "n").read_text() == "1"
    vm.rollback("v", to="seed")
    with vm.view("v") as v:
        assert digest(v) == digest(seed)
    assert vm.snapshots("v") == []


def test_layers_are_collected(vm: VolumeManager, root: Path) -> None:
    vm.create("v")
    for i in range(3):
        write(vm.live_upper("v"), {f"f{i}": "x"})
        vm.snapshot("v")
    vm.rollback("v", to="seed")
    vm.remove("v")
    assert os.listdir(root / "volumes" / "_layers") == []


def test_cli_rollback_reaps_dropped_layers_after_answering(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    assert cli("volume", "create", "v").returncode == 0
    assert cli("volume", "snapshot", "v", "--tag", "a").returncode == 0
    assert cli("volume", "snapshot", "v", "--tag", "b").returncode == 0
    assert cli("volume", "rollback", "v", "--to", "seed").returncode == 0
    layers = root / "volumes" / "_layers"
    deadline = time.monotonic() + 10
    while any(e.startswith("~") for e in os.listdir(layers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(layers)) == 2  # seed and the new live layer
