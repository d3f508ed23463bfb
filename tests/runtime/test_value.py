"""The run path's value classes (runtime/value.py): what they kept of the
dataclasses they replaced. Pure: no root."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volmerge.runtime.images import Image, Layer
from volmerge.runtime.options import HealthConfig, Mount, PortSpec, RestartPolicy, RunOptions
from volmerge.runtime.records import COLUMNS, Container
from volmerge.runtime.value import fields, plain


def _container(**kw: object) -> Container:
    values: dict[str, object] = dict(
        id="ab" * 32, name="web", image_id="cd" * 32, image_ref="localhost/x:1",
        state="created", runtime="runc", options=RunOptions("localhost/x:1", name="web"),
        image_config={"config": {}}, lowers=("/l1",), mounts=(), pid=None, owner_pid=None,
        owner_start=None, exit_code=None, health=None, health_detail=None, restart_count=0,
        stop_requested=False, error=None, created=1.0, started_at=None, finished_at=None,
        dir=Path("/tmp/c"))
    values.update(kw)
    return Container(**values)  # type: ignore[arg-type]


def test_defaults_are_fresh_per_instance() -> None:
    a, b = RunOptions("x"), RunOptions("x")
    a.env["K"] = "v"
    a.mounts.append(Mount("tmpfs", "/t"))
    assert b.env == {} and b.mounts == [] and b.restart == RestartPolicy()
    assert a.restart is not b.restart


def test_equality_is_by_class_and_fields() -> None:
    assert PortSpec(80, 8080) == PortSpec(80, 8080, "tcp", "")
    assert PortSpec(80, 8080) != PortSpec(80, 8081)
    assert Mount("bind", "/a", "/b") != PortSpec(1, 2)
    assert RunOptions("x", env={"A": "1"}) == RunOptions("x", env={"A": "1"})
    with pytest.raises(TypeError):
        hash(RunOptions("x"))


def test_repr_names_every_field() -> None:
    assert repr(RestartPolicy("always", 3)) == "RestartPolicy(name='always', max_retries=3)"
    assert repr(PortSpec(1, 2)).startswith("PortSpec(host_port=1, container_port=2")


def test_replace_copies_with_changes_and_refuses_unknown_fields() -> None:
    o = RunOptions("x", name="web", command=["/bin/true"])
    n = o.replace(image="y", command=None)
    assert (n.image, n.name, n.command) == ("y", "web", None)
    assert (o.image, o.command) == ("x", ["/bin/true"])
    assert type(n) is RunOptions
    with pytest.raises(TypeError, match="no field imag"):
        o.replace(imag="y")


def test_a_container_record_is_frozen_and_replace_still_works() -> None:
    c = _container()
    with pytest.raises(AttributeError, match="frozen"):
        c.state = "running"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del c.state  # type: ignore[misc]
    r = c.replace(state="running")
    assert (r.state, c.state) == ("running", "created")
    assert r.rootfs == Path("/tmp/c/bundle/rootfs")


def test_copies_and_pickles_keep_every_field() -> None:
    c = _container(health_detail={"log": [1, 2]})
    for other in (copy.copy(c), copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert other == c and other is not c
    img = Image("ef" * 32, "sha256:" + "0" * 64, ["x:1"], {}, [Layer("d", "g", Path("/p"), 1)],
                1, None)
    assert pickle.loads(pickle.dumps(img)) == img == copy.deepcopy(img)


def test_columns_are_the_fields_that_change() -> None:
    assert fields(Container)[:3] == ("id", "name", "image_id")
    assert COLUMNS == set(fields(Container)) - {"id", "created", "dir"}


def test_plain_converts_as_asdict_did() -> None:
    o = RunOptions("x", mounts=[Mount("volume", "/d", "data")], ports=[PortSpec(80, 8080)],
                   health=HealthConfig(["CMD", "true"]), labels={"a": "b"})
    d = o.to_json()
    assert d["mounts"] == [{"kind": "volume", "target": "/d", "source": "data",
                            "readonly": False, "options": []}]
    assert d["restart"] == {"name": "no", "max_retries": 0}
    assert d["health"]["test"] == ["CMD", "true"]
    assert d["labels"] == {"a": "b"} and d["labels"] is not o.labels
    assert plain((PortSpec(1, 2),)) == ({"host_port": 1, "container_port": 2, "proto": "tcp",
                                          "host_ip": ""},)
    assert list(d) == list(fields(RunOptions))


names = st.text(min_size=1, max_size=12)


@given(image=names, name=st.none() | names, command=st.none() | st.lists(names, max_size=3),
       env=st.dictionaries(names, names, max_size=3),
       mounts=st.lists(st.builds(Mount, st.sampled_from(["bind", "volume", "tmpfs"]), names,
                                 names, st.booleans(), st.lists(names, max_size=2)), max_size=3),
       ports=st.lists(st.builds(PortSpec, st.integers(1, 65535), st.integers(1, 65535)),
                      max_size=2),
       health=st.none() | st.builds(HealthConfig, st.lists(names, max_size=3)),
       restart=st.builds(RestartPolicy, st.sampled_from(["no", "always", "on-failure"]),
                         st.integers(0, 9)),
       rm=st.booleans(), memory=st.none() | st.integers(0, 2**40))
def test_options_survive_their_json(**kw: object) -> None:
    import json

    o = RunOptions(**kw)  # type: ignore[arg-type]
    back = RunOptions.from_json(json.loads(json.dumps(o.to_json())))
    assert back == o


def test_from_json_ignores_fields_it_does_not_know() -> None:
    d = RunOptions("x").to_json() | {"gone_in_a_later_version": 1}
    assert RunOptions.from_json(d) == RunOptions("x")


def test_frozen_values_hash_and_order_by_their_compared_fields() -> None:
    from volmerge.runtime.network.model import Network, PortSpec

    a, b = PortSpec("0.0.0.0", 80, 8080), PortSpec("", 80, 8080, "tcp")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert sorted([PortSpec("0.0.0.0", 90, 1), a, PortSpec("127.0.0.1", 1, 1)]) == [
        a, PortSpec("0.0.0.0", 90, 1), PortSpec("127.0.0.1", 1, 1)]
    assert a < PortSpec("0.0.0.0", 81, 1) <= PortSpec("0.0.0.0", 81, 1)
    with pytest.raises(TypeError):
        _ = a < 1  # type: ignore[operator]
    n = Network("n", "id", "vmb-1", "10.0.0.0/24", "10.0.0.1")
    shown = n.replace(containers=({"name": "c"},))
    assert shown == n and hash(shown) == hash(n)  # containers: not compared
    assert shown.to_dict()["containers"] == [{"name": "c"}]
    with pytest.raises(TypeError):
        hash(_container())  # a dict among its fields, as the frozen dataclass was
