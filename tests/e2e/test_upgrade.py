"""The upgrade as one transaction, end to end through the real CLI: real
images, overlay layers, runc, a bridge network in the test's own network
namespace, the demo app's SQLite schema change and config merges."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from .conftest import APP, DEMO, volume_digest

PORT = 18080


def http(path: str, data: bytes | None = None, port: int = PORT) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=5) as r:
        return json.loads(r.read())


def one_line_error(p) -> None:  # type: ignore[no-untyped-def]
    """The error is one line (progress lines of a long command may precede it)."""
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("volmerge: error: ")]
    assert len(errors) == 1 and p.stderr.splitlines()[-1] == errors[0], p.stderr


def test_upgrade_story_demo_app(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "notes", "-p", f"{PORT}:8080", "-v", "notes-data:/data", DEMO[1],
       check=True)
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)
    for text in ("first", "second", "third"):
        http("/notes", text.encode())
    # The operator edits settings, as an operator would.
    vm("exec", "notes", "sh", "-c",
       "sed -i 's/^greeting = .*/greeting = Hello from Ops/' /data/settings.ini && "
       "sed -i 's/^title: .*/title: Team notes/' /data/settings.yaml", check=True)

    # Preview: the CLI contract, and nothing changes.
    p = vm("upgrade", "notes", "--to", DEMO[2], "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["summary"]["conflicts"] == 0
    by = {f["path"]: f for f in rep["files"]}
    assert by["notes.db"]["strategy"] == "sql" and by["notes.db"]["action"] == "merged"
    assert by["settings.ini"]["action"] == "merged" and by["settings.yaml"]["action"] == "merged"
    assert all({"path", "action", "strategy"} <= set(f) for f in rep["files"])
    assert "sql" in rep
    assert http("/version")["version"] == 1

    # Rehearsal on clones: passes, leaves nothing, live container untouched.
    p = vm("upgrade", "notes", "--to", DEMO[2], "--rehearse")
    assert p.returncode == 0, p.stderr
    assert len(vm("ps", "-aq").stdout.split()) == 1
    assert vm("volume", "ls", "-q").stdout.split() == ["notes-data"]
    assert http("/version")["version"] == 1

    # The upgrade.
    p = vm("upgrade", "notes", "--to", DEMO[2], "--json")
    assert p.returncode == 0, p.stderr
    up = json.loads(p.stdout)
    assert up["generation"] == 2 and "downtime" in up["timings"]
    assert http("/version")["version"] == 2
    notes = http("/notes")
    assert notes["count"] == 3 and [n["text"] for n in notes["notes"]] == ["first", "second", "third"]
    s = http("/settings")
    flat = json.dumps(s)
    assert "Hello from Ops" in flat and "Team notes" in flat          # operator's edits kept
    assert "language" in flat and "date_format" in flat               # new settings arrived
    assert "dark" in flat                                              # changed default taken

    # A broken release: health check fails, automatic rollback, data intact.
    http("/notes", b"fourth")
    p = vm("upgrade", "notes", "--to", DEMO[3], "--health-timeout", "5")
    assert p.returncode == 1
    one_line_error(p)
    assert "rolled back" in p.stderr
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)
    assert http("/version")["version"] == 2
    assert http("/notes")["count"] == 4

    # Roll back to v1: new data must be accounted for.
    p = vm("rollback", "notes")
    assert p.returncode == 2 and "--discard-new-data" in p.stderr and "row" in p.stderr
    one_line_error(p)
    # a name for the newer data that is taken, or no name at all: refused before anything
    vm("volume", "create", "taken", check=True)
    for keep, needle in (("taken", "already exists"), ("bad/name", "invalid name for the newer data")):
        for dry in ([], ["--dry-run"]):  # the preview says so too
            p = vm("rollback", "notes", "--keep-new-data-as", keep, *dry)
            assert p.returncode == 2 and needle in p.stderr, p.stderr
            one_line_error(p)
        assert http("/version")["version"] == 2 and http("/notes")["count"] == 4
    vm("volume", "rm", "taken", check=True)
    p = vm("rollback", "notes", "--keep-new-data-as", "notes-v2", "--json")
    assert p.returncode == 0, p.stderr
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)
    assert http("/version")["version"] == 1
    assert http("/notes")["count"] == 3
    assert "notes-v2" in vm("volume", "ls", "-q").stdout.split()
    hist = json.loads(vm("history", "notes", "--json").stdout)
    gens = {h["generation"]: h["state"] for h in hist if h["type"] == "generation"}
    assert gens == {1: "current", 2: "discarded"}
    kinds = [(h["type"], h["state"]) for h in hist if h["type"] != "generation"]
    assert kinds == [("upgrade", "done"), ("upgrade", "rolled-back"), ("rollback", "done")]

    # The next upgrade reports the generation that history records (it said
    # 2, the old generation + 1, while history held 3).
    p = vm("upgrade", "notes", "--to", DEMO[2], "--json")
    assert p.returncode == 0, p.stderr
    new_gen = json.loads(p.stdout)["generation"]
    hist = json.loads(vm("history", "notes", "--json").stdout)
    current = [h["generation"] for h in hist if h["type"] == "generation"
               and h["state"] == "current"]
    assert current == [new_gen] == [3]


def _start_app(vm, name: str = "app") -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", name, "-v", f"{name}-data:/data", APP[1], check=True)
    vm("exec", name, "sh", "-c", "echo '{\n  \"a\": 10,\n  \"b\": 2\n}' > /data/settings.json && "
       "echo mine > /data/user.txt", check=True)


def test_conflict_stops_the_upgrade_and_changes_nothing(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    vm("exec", "app", "sh", "-c", "echo '{\n  \"a\": 1,\n  \"b\": 20\n}' > /data/settings.json",
       check=True)
    before = volume_digest(vm.root, "app-data")
    p = vm("upgrade", "app", "--to", APP[2], "--dry-run", "--json")
    assert p.returncode == 1
    rep = json.loads(p.stdout)
    assert rep["summary"]["conflicts"] == 1 and rep["would_stop"]
    conflict = [f for f in rep["files"] if f["action"] == "conflict"][0]
    assert conflict["path"] == "settings.json" and conflict["conflicts"][0]["location"] == "b"
    p = vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.5")
    assert p.returncode == 1 and "conflict" in p.stderr
    one_line_error(p)
    c = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert c["image"] == APP[1] and c["state"] == "running"
    assert volume_digest(vm.root, "app-data") == before
    p = vm("upgrade", "app", "--to", APP[2], "--on-conflict", "ours", "--health-timeout", "0.5")
    assert p.returncode == 0, p.stderr


def test_volume_path_the_new_image_no_longer_declares_stays_mounted(vm) -> None:  # type: ignore[no-untyped-def]
    _start_app(vm)
    before = volume_digest(vm.root, "app-data")
    rep = json.loads(vm("upgrade", "app", "--to", APP[3], "--dry-run", "--json").stdout)
    notes = " ".join(n for v in rep["plan"]["volumes"] for n in v["notes"])
    assert "no longer declares /data" in notes
    p = vm("upgrade", "app", "--to", APP[3], "--health-timeout", "0.5")
    assert p.returncode == 0, p.stderr
    assert volume_digest(vm.root, "app-data") == before
    assert vm("exec", "app", "cat", "/data/user.txt").stdout == "mine\n"


@pytest.mark.parametrize("args,needle", [
    (["upgrade", "app", "--to", "localhost/nope:1"], "nope"),
    (["upgrade", "ghost", "--to", APP[2]], "ghost"),
    (["upgrade", "app", "--to", APP[2], "--on-conflict", "maybe"], "on-conflict"),
    (["upgrade", "app", "--to", APP[2], "--health-timeout", "-1"], "health-timeout"),
    (["upgrade", "app", "--to", APP[2], "--dry-run", "--rehearse"], "exclude"),
    (["rollback", "app"], "no committed upgrade"),
    (["rollback", "app", "--discard-new-data", "--keep-new-data-as", "x"], "exclude"),
])
def test_bad_input_exit_2_nothing_changed(vm, args: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    _start_app(vm)
    before = volume_digest(vm.root, "app-data")
    p = vm(*args)
    assert p.returncode == 2, p.stderr
    one_line_error(p)
    assert needle in p.stderr
    assert volume_digest(vm.root, "app-data") == before
    assert json.loads(vm("inspect", "app", "--json").stdout)[0]["image"] == APP[1]


@pytest.mark.parametrize("var", ["VOLMERGE_SERVING_COPY_MAX_MB", "VOLMERGE_PG_UPGRADE_MIN_MB"])
@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_a_bad_setting_in_the_environment_exit_2_nothing_changed(  # type: ignore[no-untyped-def]
        vm, var: str, value: str) -> None:
    """Settings that later steps read are checked when the upgrade is
    planned: a bad one stops it before anything changes."""
    _start_app(vm)
    before = volume_digest(vm.root, "app-data")
    p = vm("upgrade", "app", "--to", APP[2], env={var: value})
    assert p.returncode == 2, p.stderr
    one_line_error(p)
    assert var in p.stderr and "whole number" in p.stderr
    assert volume_digest(vm.root, "app-data") == before
    c = json.loads(vm("inspect", "app", "--json").stdout)[0]
    assert c["image"] == APP[1] and c["state"] == "running"


def test_policy_that_does_not_parse(vm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _start_app(vm)
    bad = tmp_path / "policy.toml"
    bad.write_text("[[rule]\nglob = \n")
    p = vm("upgrade", "app", "--to", APP[2], "--policy", str(bad))
    assert p.returncode == 2 and "does not parse" in p.stderr
    one_line_error(p)


def test_second_upgrade_while_one_runs_is_refused(vm) -> None:  # type: ignore[no-untyped-def]
    from volmerge.runtime.store import Store

    _start_app(vm)
    st = Store(vm.root)
    try:
        with st.lock("upgrade-app", blocking=False):
            p = vm("upgrade", "app", "--to", APP[2])
    finally:
        st.close()
    assert p.returncode == 2 and "another upgrade" in p.stderr
    one_line_error(p)
    assert json.loads(vm("inspect", "app", "--json").stdout)[0]["image"] == APP[1]


def test_operator_policy_wins(vm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _start_app(vm)
    pol = tmp_path / "policy.toml"
    pol.write_text('[[rule]]\nglob = "settings.json"\nstrategy = "ours"\n')
    rep = json.loads(vm("upgrade", "app", "--to", APP[2], "--dry-run", "--json",
                        "--policy", str(pol)).stdout)
    f = [f for f in rep["files"] if f["path"] == "settings.json"][0]
    assert f["strategy"] == "ours" and f["action"] == "kept-ours"


HOSTILE = "localhost/volmerge-test/notes-hostile:2"
HOSTILE_POLICY = """
# An image asking for more than it may: data loss and its own settings.ini.
[sql]
defaults = {"notes.pinned" = "0", "notes.content" = "'(lost)'"}
allow_data_loss = true

[[rule]]
glob = "settings.ini"
strategy = "theirs"

[[rule]]
glob = "*.db"
strategy = "sql"
options = { allow_data_loss = true }
"""


def _hostile_image(out) -> str:  # type: ignore[no-untyped-def]
    """The demo app v2 without the rename hint (so notes.body, holding every
    note, is dropped) and a policy in /etc/volmerge/policy.toml (no label)
    that allows the loss and takes its own settings.ini over the operator's."""
    from volmerge.demoimages.cache import cache_root
    from volmerge.demoimages.cache import cached_layer as _cached_layer
    from volmerge.demoimages.demoapp import demo_config
    from volmerge.demoimages.demoapp import demo_entries as _demo_entries
    from volmerge.demoimages.ociwriter import make_layer, write_archive
    from volmerge.demoimages.recipes import recipe

    cache = cache_root().resolve()
    blobs = [_cached_layer(layer, cache, "none") for layer in recipe("demo-v2").layers[:2]]
    entries = _demo_entries(2)
    entries["etc/volmerge/policy.toml"] = HOSTILE_POLICY
    blobs.append(make_layer(entries, out.with_name("demo-layer.tar")))
    cfg = demo_config(2)
    del cfg["Labels"]["io.volmerge.policy"]
    write_archive(out, blobs, cfg, HOSTILE)
    return str(out)


def test_image_policy_cannot_drop_data_or_discard_operator_edits(  # type: ignore[no-untyped-def]
        vm, tmp_path) -> None:
    vm("image", "load", _hostile_image(tmp_path / "hostile.tar"), check=True)
    vm("run", "-d", "--name", "notes", "-p", f"{PORT}:8080", "-v", "notes-data:/data", DEMO[1],
       check=True)
    vm("wait", "--healthy", "notes", "--timeout", "30", check=True)
    for text in ("first", "second"):
        http("/notes", text.encode())
    vm("exec", "notes", "sed", "-i", "s/^greeting = .*/greeting = Hello from Ops/",
       "/data/settings.ini", check=True)
    before = volume_digest(vm.root, "notes-data")
    origin = "image:/etc/volmerge/policy.toml"

    p = vm("upgrade", "notes", "--to", HOSTILE, "--dry-run", "--json")
    assert p.returncode == 1, p.stderr
    rep = json.loads(p.stdout)
    assert rep["would_stop"]
    warnings = "\n".join(rep["plan"]["policy_warnings"])
    assert warnings.count("asks for allow_data_loss; ignored") == 2
    assert "'settings.ini' asks for strategy 'theirs'" in warnings
    by = {f["path"]: f for f in rep["files"]}
    ini, db = by["settings.ini"], by["notes.db"]
    assert ini["action"] == "merged" and ini["strategy"] == "structured"
    assert (ini["policy"], ini["rule"]) == (origin, "settings.ini") and ini["overridden"]
    assert "-greeting = Hello from Ops" not in ini["diff"]           # the operator's edit stays
    assert db["action"] == "conflict" and (db["policy"], db["rule"]) == (origin, "*.db")
    assert "data loss refused" in db["conflicts"][0]["message"]
    p = vm("upgrade", "notes", "--to", HOSTILE, "--dry-run")
    assert p.returncode == 1
    assert "warning: image:/etc/volmerge/policy.toml asks for allow_data_loss; ignored" in p.stdout
    assert f"[policy {origin} rule 'settings.ini']" in p.stdout

    # The upgrade refuses as it would without any policy; nothing changed.
    p = vm("upgrade", "notes", "--to", HOSTILE, "--health-timeout", "20")
    assert p.returncode == 1 and "data loss refused" in p.stderr, p.stderr
    assert "warning: image:/etc/volmerge/policy.toml asks for allow_data_loss; ignored" in p.stderr
    one_line_error(p)
    assert json.loads(vm("inspect", "notes", "--json").stdout)[0]["image"] == DEMO[1]
    assert volume_digest(vm.root, "notes-data") == before

    # The operator's own policy may allow it (preview only) ...
    mine = tmp_path / "mine.toml"
    mine.write_text("[sql]\nallow_data_loss = true\n")
    p = vm("upgrade", "notes", "--to", HOSTILE, "--dry-run", "--json", "--policy", str(mine))
    assert p.returncode == 0, p.stderr
    assert {f["path"]: f for f in json.loads(p.stdout)["files"]}["notes.db"]["action"] == "merged"
    # ... and so may --allow-data-loss; the operator's settings edit survives either way.
    p = vm("upgrade", "notes", "--to", HOSTILE, "--allow-data-loss", "--health-timeout", "20")
    assert p.returncode == 0, p.stderr
    assert http("/version")["version"] == 2
    assert http("/notes")["count"] == 2
    ini = vm("exec", "notes", "cat", "/data/settings.ini", check=True).stdout
    assert "greeting = Hello from Ops" in ini and "language = en" in ini


def test_upgrade_of_a_volume_holding_a_deep_tree(vm) -> None:  # type: ignore[no-untyped-def]
    """Issue 14, 4, as reported: the container nests 1,500 directories in its
    volume; the upgrade merges around them, and removing the volume
    afterwards (the background deleter) leaves every command working."""
    import os
    import time

    _start_app(vm)
    nest = 'i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done'
    p = vm("exec", "app", "sh", "-c", f"cd /data && {nest} && echo x > f")
    assert p.returncode == 0, p.stderr[-300:]
    p = vm("upgrade", "app", "--to", APP[2], "--health-timeout", "0.5")
    assert p.returncode == 0, p.stderr[-300:]
    assert vm("exec", "app", "cat", "/data/settings.json").stdout == \
        '{\n  "a": 10,\n  "b": 3,\n  "c": 4\n}\n'
    walk = 'i=0; while [ $i -lt 1500 ]; do cd d || exit 1; i=$((i+1)); done'
    assert vm("exec", "app", "sh", "-c", f"cd /data && {walk} && cat f").stdout == "x\n"
    assert vm("rm", "-f", "app").returncode == 0
    assert vm("volume", "rm", "app-data").returncode == 0
    layers = vm.root / "volumes" / "_layers"
    deadline = time.monotonic() + 120
    while any(e.startswith("~") for e in os.listdir(layers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(e.startswith("~") for e in os.listdir(layers))
    p = vm("volume", "ls", "-q")
    assert p.returncode == 0 and p.stderr == "", p.stderr[-300:]
    p = vm("run", "--rm", "-v", "after:/data", APP[1], "sh", "-c", "echo ok > /data/f")
    assert p.returncode == 0, p.stderr[-300:]


def test_a_failed_rehearsal_leaves_nothing(vm) -> None:  # type: ignore[no-untyped-def]
    vm("run", "-d", "--name", "app", "-v", "app-data:/data", APP[1], check=True)
    vm("exec", "app", "sh", "-c", "echo '{\n  \"a\": 1,\n  \"b\": 20\n}' > /data/settings.json",
       check=True)
    before = volume_digest(vm.root, "app-data")
    p = vm("upgrade", "app", "--to", APP[2], "--rehearse", "--health-timeout", "0.3")
    assert p.returncode == 1 and "rehearsal" in p.stderr and "conflict" in p.stderr
    one_line_error(p)
    assert vm("volume", "ls", "-q").stdout.split() == ["app-data"]
    assert len(vm("ps", "-aq").stdout.split()) == 1
    assert volume_digest(vm.root, "app-data") == before
    # earlier tests of this module leave history under the same name; no rehearsal in it
    assert not [h for h in json.loads(vm("history", "app", "--json").stdout)
                if h["type"] == "rehearsal"]


def test_a_rehearsal_killed_midway_is_cleaned_up_by_recover(vm) -> None:  # type: ignore[no-untyped-def]
    """The rehearsal is journaled like the upgrade: a crash after its copy of
    the container started leaves clones that the next command's recovery
    throws away (before the one runner they stayed for good)."""
    import signal

    _start_app(vm)
    before = volume_digest(vm.root, "app-data")
    for point in ("rehearsal.after-clone", "rehearsal.after-start", "rehearsal.committed"):
        p = vm("upgrade", "app", "--to", APP[2], "--rehearse", "--health-timeout", "0.3",
               env={"VOLMERGE_FAULT": point})
        assert p.returncode == -signal.SIGKILL, f"{point}: {p.stderr}"
        assert vm("volume", "ls", "-q").stdout.split() == ["app-data"], point  # recovered first
        assert [json.loads(vm("inspect", i, "--json").stdout)[0]["name"]
                for i in vm("ps", "-aq").stdout.split()] == ["app"], point
        assert volume_digest(vm.root, "app-data") == before
    assert json.loads(vm("inspect", "app", "--json").stdout)[0]["state"] == "running"
    assert vm("recover").stdout.strip() == "Nothing to recover."
    p = vm("upgrade", "app", "--to", APP[2], "--rehearse", "--health-timeout", "0.3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"]
