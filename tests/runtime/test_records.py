"""The ``containers`` table's typed records (runtime/records.py): rows to
frozen Container values and back, and the repository the supervisor is
handed.  No root, no container: a store in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.runtime.errors import BadInput, Conflict, NotFound
from volmerge.runtime.options import RunOptions
from volmerge.runtime.records import (
    COLUMNS,
    Container,
    ContainerRecords,
    container_from_row,
    encode_columns,
    image_users,
)
from volmerge.runtime.store import Store

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.fixture
def records(tmp_path: Path):
    st = Store(tmp_path / "root", sweep=False)
    try:
        yield ContainerRecords(st)
    finally:
        st.close()


def _insert(records: ContainerRecords, cid: str, name: str) -> Container:
    return records.insert(cid=cid, name=name, image_id="sha256:" + "ab" * 32, image_ref="img",
                          runtime="builtin", options=RunOptions(image="img", name=name,
                                                                command=["/bin/true"]),
                          image_config={"config": {"Env": ["A=1"]}}, lowers=["/l1", "/l2"],
                          created=1000.5)


def test_insert_then_lookup_gives_a_frozen_typed_record(records):
    c = _insert(records, "ab" * 32, "one")
    assert isinstance(c, Container)
    assert (c.name, c.state, c.lowers, c.mounts, c.stop_requested) == (
        "one", "created", ("/l1", "/l2"), (), False)
    assert c.options.name == "one" and c.options.command == ["/bin/true"]
    assert c.image_config == {"config": {"Env": ["A=1"]}}
    assert c.dir == records.store.path("containers", c.id) and c.dir.is_dir()
    with pytest.raises(AttributeError, match="frozen"):
        c.state = "running"  # type: ignore[misc]
    assert records.lookup("one") == c == records.lookup(c.id[:5])


def test_update_encodes_json_columns_and_booleans(records):
    c = _insert(records, "cd" * 32, "two")
    mounts = [{"kind": "volume", "source": "/v", "target": "/data", "readonly": False,
               "options": [], "name": "v"}]
    records.update(c.id, state="running", pid=42, mounts=mounts, stop_requested=True,
                   health_detail={"failing_streak": 1, "log": []})
    cur = records.lookup(c.id)
    assert (cur.state, cur.pid, cur.stop_requested, cur.health_detail) == (
        "running", 42, True, {"failing_streak": 1, "log": []})
    assert cur.mounts == tuple(mounts) and records.recorded_mounts(c) == tuple(mounts)
    assert records.stop_requested(c.id)
    assert cur.to_json()["mounts"] == mounts  # JSON output as before: a list


def test_update_refuses_a_column_that_is_not_one(records):
    c = _insert(records, "ef" * 32, "three")
    with pytest.raises(ValueError, match="not a container column"):
        records.update(c.id, **{"state = 'x', name": "y"})
    with pytest.raises(ValueError):
        encode_columns({"id": "other"})
    assert "dir" not in COLUMNS and "created" not in COLUMNS


def test_name_clash_ambiguous_prefix_and_unknown(records):
    _insert(records, "a1" + "0" * 62, "x")
    _insert(records, "a1" + "1" * 62, "y")
    with pytest.raises(Conflict):
        _insert(records, "b2" * 32, "x")
    with pytest.raises(BadInput, match="ambiguous"):
        records.lookup("a1")
    with pytest.raises(NotFound):
        records.lookup("nope")
    assert records.name_taken("x") and not records.name_taken("z")


def test_rename_changes_the_name_in_the_options_too(records):
    c = _insert(records, "cc" * 32, "old")
    _insert(records, "dd" * 32, "taken")
    with pytest.raises(Conflict):
        records.rename(c.id, "taken")
    r = records.rename(c.id, "new")
    assert (r.name, r.options.name) == ("new", "new")
    assert sorted(image_users(records.store, c.image_id)) == ["new", "taken"]
    records.delete(c.id)
    assert [x.name for x in records.all()] == ["taken"]


def test_row_mapping_reads_every_column():
    row = {"id": "i", "name": "n", "image_id": "m", "image_ref": "r", "state": "exited",
           "runtime": "runc", "options": '{"image": "r"}', "image_config": "{}",
           "lowers": '["/a"]', "mounts": "[]", "pid": None, "owner_pid": 7, "owner_start": "99",
           "exit_code": 3, "health": None, "health_detail": None, "restart_count": 2,
           "stop_requested": 1, "error": "e", "created": 1.0, "started_at": 2.0,
           "finished_at": 3.0}
    c = container_from_row(row, Path("/x"))
    assert (c.owner_pid, c.owner_start, c.exit_code, c.restart_count, c.stop_requested,
            c.error, c.finished_at, c.lowers) == (7, "99", 3, 2, True, "e", 3.0, ("/a",))
    assert not c.live and c.log_path == Path("/x/log")
    assert set(row) - {"id", "created"} == COLUMNS
