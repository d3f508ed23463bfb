"""The merge staged while the old version serves (upgrade/staging.py): what
the old version writes between the serving snapshot and the stop is merged
again at the switch, path by path, or the whole volume when the paths cannot
be split; the result is the merge an upgrade that stopped first would make."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import APP, DEMO, volume_digest


def upgrade_writing(root: Path, name: str, image: str, volume: str,
                    write: Callable[[Path], None]) -> dict[str, Any]:
    """``volmerge upgrade`` through the library; ``write`` gets the live
    volume's mount (what the running container sees) once the merge is
    staged, before the stop."""
    from volmerge.context import Context
    from volmerge.runtime.store import Store
    from volmerge.upgrade import UpgradeOptions, upgrade

    st = Store(root)
    try:
        ctx = Context(st)
        order: list[str] = []

        def progress(event: str, text: str, seconds: float | None) -> None:
            if event == "step":
                order.append(text)
                if "staged layer" in text:
                    c = ctx.engine.get(name)
                    assert c.state == "running", "the merge is staged while the old one serves"
                    write(ctx.volumes.pool.merged(volume))

        rep = upgrade(ctx, UpgradeOptions(container=name, to_image=image, health_timeout=0.3,
                                          stop_timeout=2), progress)
        assert any("staged layer" in t for t in order)
        return rep
    finally:
        st.close()


def _app(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    vm("exec", "app", "sh", "-c", "echo '{\n  \"a\": 10,\n  \"b\": 2\n}' > /data/settings.json && "
       "echo mine > /data/user.txt && mkdir /data/sub && echo x > /data/sub/x.txt", check=True)


#: the old container holds a file on the volume: the serving snapshot cannot
#: swap its mount
HOLD = "exec 3</data/settings.json; trap 'exit 0' TERM; while :; do sleep 0.05; done"


def _held_app(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], "sh", "-c", HOLD, check=True)
    vm("exec", "app", "sh", "-c", "echo '{\n  \"a\": 10,\n  \"b\": 2\n}' > /data/settings.json"
       " && echo mine > /data/user.txt && mkdir /data/sub && echo x > /data/sub/x.txt", check=True)


def _after_stopping_first(vm, edit: str, start: Callable[[Any], None] = _app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The volume an upgrade that stops before merging makes from the same
    writes: the reference the staged path must reproduce."""
    start(vm)
    vm("exec", "app", "sh", "-c", edit, check=True)
    vm("stop", "app", check=True)
    p = vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", "--stop-timeout", "2")
    assert p.returncode == 0, p.stderr
    want = volume_digest(vm.root, "app-data")
    vm("rm", "-f", "app", check=True)
    for i in vm("ps", "-aq").stdout.split():
        vm("rm", "-f", i, check=True)
    vm("volume", "rm", "-f", "app-data", check=True)
    return want


def test_files_written_after_staging_are_merged_again(vm) -> None:  # type: ignore[no-untyped-def]
    edit = ("echo '{\n  \"a\": 11,\n  \"b\": 2\n}' > /data/settings.json && rm /data/user.txt"
            " && echo late > /data/late.txt && echo y > /data/sub/x.txt")
    want = _after_stopping_first(vm, edit)
    _app(vm)

    def write(live: Path) -> None:
        (live / "settings.json").write_text('{\n  "a": 11,\n  "b": 2\n}\n')
        (live / "user.txt").unlink()
        (live / "late.txt").write_text("late\n")
        (live / "sub" / "x.txt").write_text("y\n")

    rep = upgrade_writing(vm.root, "app", APP[2], "app-data", write)
    how = rep["volumes"]["app-data"]["switch"]["merge"]
    assert "merged again" in how and "merged whole" not in how, how
    got = volume_digest(vm.root, "app-data")
    assert got == want
    data = json.loads(vm("exec", "app", "cat", "/data/settings.json", check=True).stdout)
    assert data == {"a": 11, "b": 3, "c": 4}


def test_a_directory_written_after_staging_means_the_whole_merge(vm) -> None:  # type: ignore[no-untyped-def]
    want = _after_stopping_first(vm, "mkdir /data/new && echo n > /data/new/n.txt")
    _app(vm)

    def write(live: Path) -> None:
        (live / "new").mkdir()
        (live / "new" / "n.txt").write_text("n\n")

    rep = upgrade_writing(vm.root, "app", APP[2], "app-data", write)
    assert "merged whole" in rep["volumes"]["app-data"]["switch"]["merge"]
    assert volume_digest(vm.root, "app-data") == want


def test_nothing_written_after_staging_uses_the_staged_merge(vm) -> None:  # type: ignore[no-untyped-def]
    want = _after_stopping_first(vm, "true")
    _app(vm)
    rep = upgrade_writing(vm.root, "app", APP[2], "app-data", lambda live: None)
    assert "as is" in rep["volumes"]["app-data"]["switch"]["merge"]
    assert volume_digest(vm.root, "app-data") == want
    assert not (vm.root / "staged").exists() or not any((vm.root / "staged").iterdir())


def _write_late_note(live: Path) -> None:
    """A note the old version writes after the merge was staged (v1's schema)."""
    db = sqlite3.connect(live / "notes.db", timeout=10)
    with db:
        db.execute("INSERT INTO notes (body, created) VALUES ('late', '2026-01-01T00:00:00Z')")
    db.close()


def _late_note(vm) -> str:  # type: ignore[no-untyped-def]
    """That note as the new version holds it (v2's schema)."""
    return vm("exec", "notes", "python3", "-c",
              "import sqlite3; print(sqlite3.connect('/data/notes.db').execute("
              "\"SELECT content, pinned FROM notes WHERE content = 'late'\").fetchall())",
              check=True).stdout.strip()


def test_a_database_written_after_staging_is_replayed_again(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "notes", "-v", "notes-data:/data", DEMO[1], check=True)
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)

    rep = upgrade_writing(vm.root, "notes", DEMO[2], "notes-data", _write_late_note)
    how = rep["volumes"]["notes-data"]["switch"]["merge"]
    assert "notes.db" in how and "merged again" in how, how
    assert _late_note(vm) == "[('late', 0)]"


def test_a_volume_held_open_is_staged_from_a_copy(vm) -> None:  # type: ignore[no-untyped-def]
    """A process holding a file in the volume (as a database server does)
    makes the serving snapshot refuse the swap: the volume is copied
    instead while the container is paused, the merge staged from the copy,
    and with nothing written since, used as is at the switch; the copy is
    gone after the commit."""
    want = _after_stopping_first(vm, "true", _held_app)
    _held_app(vm)
    p = vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", "--stop-timeout", "2",
           "--json")
    assert p.returncode == 0, p.stderr
    switch = json.loads(p.stdout)["volumes"]["app-data"]["switch"]
    assert switch["staged_from"] == "copy", switch
    assert switch["merge"] == "staged merge used as is: nothing written since the copy", switch
    assert volume_digest(vm.root, "app-data") == want
    assert json.loads(vm("exec", "app", "cat", "/data/settings.json", check=True).stdout) == {
        "a": 10, "b": 3, "c": 4}
    vol = json.loads(vm("volume", "inspect", "app-data", "--json").stdout)
    vol = vol[0] if isinstance(vol, list) else vol
    assert not [s for s in vol["snapshots"] if (s.get("tag") or "").endswith("-prep")]
    assert vm("volume", "ls", "-q").stdout.split() == ["app-data"]


def test_a_live_layer_over_the_copy_limit_is_merged_at_the_switch(vm) -> None:  # type: ignore[no-untyped-def]
    """A busy volume whose live layer is larger than
    VOLMERGE_SERVING_COPY_MAX_MB is not copied (the old version would be
    paused for the whole copy): it is merged at the switch, to the same
    result, and no copy is left."""
    want = _after_stopping_first(vm, "true", _held_app)
    _held_app(vm)
    p = vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.3", "--stop-timeout", "2",
           "--json", env={"VOLMERGE_SERVING_COPY_MAX_MB": "0"})
    assert p.returncode == 0, p.stderr
    switch = json.loads(p.stdout)["volumes"]["app-data"]["switch"]
    assert switch["staged_from"] is None, switch
    assert volume_digest(vm.root, "app-data") == want
    assert vm("volume", "ls", "-q").stdout.split() == ["app-data"]


def test_files_written_after_the_copy_are_merged_again(vm) -> None:  # type: ignore[no-untyped-def]
    """Staged from a copy, the paths written between the copy and the stop
    (and only those) are merged again at the switch: the result is the
    merge an upgrade that stopped first makes."""
    want = _after_stopping_first(vm, "echo mine2 > /data/user.txt && echo late > /data/late.txt",
                                 _held_app)
    _held_app(vm)

    def write(live: Path) -> None:
        (live / "user.txt").write_text("mine2\n")
        (live / "late.txt").write_text("late\n")

    rep = upgrade_writing(vm.root, "app", APP[2], "app-data", write)
    switch = rep["volumes"]["app-data"]["switch"]
    assert switch["staged_from"] == "copy", switch
    assert switch["merge"] == "2 changed path(s) merged again: late.txt, user.txt", switch
    assert volume_digest(vm.root, "app-data") == want
    assert vm("exec", "app", "cat", "/data/user.txt", check=True).stdout == "mine2\n"
    assert vm("volume", "ls", "-q").stdout.split() == ["app-data"]


def test_a_copy_removed_before_the_switch_means_the_whole_merge(vm) -> None:  # type: ignore[no-untyped-def]
    """The serving copy removed by hand (``volume rm``) between the staged
    merge and the switch: what was written since cannot be listed, so the
    whole merge is done at the switch, and the upgrade goes through."""
    want = _after_stopping_first(vm, "echo mine2 > /data/user.txt", _held_app)
    _held_app(vm)

    def write(live: Path) -> None:
        (live / "user.txt").write_text("mine2\n")
        (copy,) = [v for v in vm("volume", "ls", "-q").stdout.split() if v.startswith("upgrade-")]
        vm("volume", "rm", "-f", copy, check=True)

    rep = upgrade_writing(vm.root, "app", APP[2], "app-data", write)
    switch = rep["volumes"]["app-data"]["switch"]
    assert switch["merge"] == "merged whole at the switch (the serving copy is gone)", switch
    assert volume_digest(vm.root, "app-data") == want


def test_a_database_held_open_and_written_after_the_copy_is_replayed_again(vm) -> None:  # type: ignore[no-untyped-def]
    """The demo app with notes.db held open by a process of its container
    (as a long-lived connection does): staged from a copy, and the note
    written after the copy arrives through the replay again at the switch."""
    vm("run", "-d", "--name", "notes", "-v", "notes-data:/data", DEMO[1], check=True)
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)
    vm("exec", "notes", "sh", "-c",
       "(exec 3</data/notes.db; exec sleep 600) </dev/null >/dev/null 2>&1 &", check=True)

    rep = upgrade_writing(vm.root, "notes", DEMO[2], "notes-data", _write_late_note)
    switch = rep["volumes"]["notes-data"]["switch"]
    assert switch["staged_from"] == "copy", switch
    assert switch["merge"] == "1 changed path(s) merged again: notes.db", switch
    assert _late_note(vm) == "[('late', 0)]"


def test_the_successors_root_and_netns_are_made_while_the_old_version_serves(vm) -> None:  # type: ignore[no-untyped-def]
    """The successor's start is prepared before the stop (PrepareStart): its
    root is mounted and its network namespace staged with the old address
    while the old container still runs, and the start at the switch uses
    both."""
    from volmerge.context import Context
    from volmerge.runtime import sys as rsys
    from volmerge.runtime.store import Store
    from volmerge.upgrade import UpgradeOptions, upgrade

    _app(vm)
    old_id = json.loads(vm("inspect", "app", "--json").stdout)[0]["id"]
    st = Store(vm.root)
    seen: list[tuple[str, str, bool, str | None]] = []
    try:
        ctx = Context(st)
        (lease,) = ctx.network.leases(container_id=old_id)
        old_ip = lease.ip

        def progress(event: str, text: str, seconds: float | None) -> None:
            if event == "step" and text.startswith("prepare the new app's start"):
                new = ctx.engine.get("app")
                staged = ctx.network.rows.staged(new.id)
                seen.append((ctx.engine.get(old_id).state, new.state,
                             rsys.is_mountpoint(new.rootfs), staged and staged.ip))

        upgrade(ctx, UpgradeOptions(container="app", to_image=APP[2], health_timeout=0.3,
                                    stop_timeout=2), progress)
        assert seen == [("running", "created", True, old_ip)]
        new = ctx.engine.get("app")
        assert new.state == "running" and ctx.network.rows.staged(new.id) is None
        assert ctx.network.attachment(new.id).host_veth == ctx.network.host.veth_name(new.id)
    finally:
        st.close()
