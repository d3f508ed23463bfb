"""The merge's interfaces: the writer a caller supplies, detection order and
the whole-file pick as strategy attributes, and the merge's incomplete output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from volmerge.runtime import incomplete
from volmerge.strategies.base import DEFAULT_RANKS, detection_order, whole_file_pick
from volmerge.strategies.tree import merge_trees
from volmerge.strategies.whole import BinaryStrategy, OursStrategy, TheirsStrategy
from volmerge.strategies.writers import UpperWriter

from .treeutil import read, three

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


class _MarkerFormat:
    """A diff format of plain files (no root needed): ``NAME.deleted`` for a
    deletion, a ``.replaced`` file in a directory that replaces ours'."""

    def make_whiteout(self, name: str, *, dir_fd: int | None = None, mode: int = 0) -> None:
        os.close(os.open(f"{name}.deleted", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                         dir_fd=dir_fd))

    def set_opaque(self, target: int) -> None:
        os.close(os.open(".replaced", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=target))


def test_the_caller_supplies_the_diff_writer(tmp_path: Path) -> None:
    b, o, t = three(tmp_path, {"same": b"s", "gone": b"g", "f": b"file"},
                    {"same": b"s", "gone": b"g", "f": b"file"},
                    {"same": b"s", "f": {"now": b"dir"}, "new": b"n"})
    rep = merge_trees(b, o, t, tmp_path / "up",
                      writer=lambda root: UpperWriter(root, _MarkerFormat()))
    assert read(tmp_path / "up") == {"gone.deleted": b"", "f": {"now": b"dir", ".replaced": b""},
                                     "new": b"n"}
    assert rep.written and rep.summary["written"] == 3


def test_detection_order_is_the_strategies_rank() -> None:
    class Early:
        name = "early"
        detect_rank = 5

    class Unranked:
        name = "plugin"

    text, binary = type("T", (), {"name": "text"})(), BinaryStrategy()
    got = detection_order({"binary": binary, "plugin": Unranked(), "text": text, "early": Early()})
    assert [s.name for s in got] == ["early", "text", "binary"]
    assert DEFAULT_RANKS["sql"] < DEFAULT_RANKS["structured"] < DEFAULT_RANKS["text"]


def test_whole_file_pick_is_part_of_the_interface() -> None:
    assert whole_file_pick(OursStrategy()) == (True, "ours")
    assert whole_file_pick(TheirsStrategy()) == (True, "theirs")
    assert whole_file_pick(BinaryStrategy()) == (True, None)
    assert whole_file_pick(object()) == (False, None)
    assert whole_file_pick(type("X", (), {"pick": staticmethod(lambda: 1)})()) == (False, None)


def test_a_crashed_merges_output_is_swept_by_the_next_merge(tmp_path: Path) -> None:
    """The merge builds OUT beside it, marked incomplete; a crash used to
    leave ``.OUT.volmerge-tmp-XXXX`` there for good."""
    b, o, t = three(tmp_path, {"a": b"1"}, {"a": b"1"}, {"a": b"2"})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: a merge killed half way
        try:
            path, _fd = incomplete.make(tmp_path, ".out.volmerge")
            (path / "a").write_bytes(b"half")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    with incomplete.building(tmp_path, ".out.volmerge") as live:  # another merge, running
        merge_trees(b, o, t, tmp_path / "out")
        assert live.is_dir()
    assert read(tmp_path / "out") == {"a": b"2"}
    assert not [n for n in os.listdir(tmp_path) if incomplete.is_marked(n)]
