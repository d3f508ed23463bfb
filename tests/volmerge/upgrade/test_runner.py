"""The journaled runner on its own (no containers, no root needed): steps
that record what they do, a real store for the lock and the journal."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from volmerge.errors import Conflict, NotDone
from volmerge.upgrade import journal as jr
from volmerge.upgrade import runner
from volmerge.upgrade.steps import Step, Tx, from_journal

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

LOG: list[str] = []
FAIL_ONCE: set[str] = set()


@dataclass(frozen=True)
class Rec(Step):
    """Applies and undoes by writing to LOG; fails when ``fail`` (or once,
    when its name is in FAIL_ONCE)."""

    kind = "test-rec"
    name: str
    fail: bool = False

    def describe(self) -> str:
        return f"rec {self.name}"

    def apply(self, ctx: Any, tx: Tx) -> dict[str, Any]:
        LOG.append(f"apply {self.name}")
        if self.fail or self.name in FAIL_ONCE:
            FAIL_ONCE.discard(self.name)
            raise RuntimeError(f"{self.name} broke")
        return {"made": self.name}

    def reverse(self, data: dict[str, Any]) -> Step | None:
        return Unrec(name=self.name, made=data.get("made", "-"))


@dataclass(frozen=True)
class Unrec(Step):
    """Rec's reverse: data built from Rec's fields and what its apply returned."""

    kind = "test-unrec"
    name: str
    made: str

    def describe(self) -> str:
        return f"unrec {self.name}"

    def apply(self, ctx: Any, tx: Tx) -> dict[str, Any]:
        LOG.append(f"undo {self.name} {self.made}")
        return {}


@dataclass(frozen=True)
class NoReturn(Rec):
    kind = "test-noreturn"


@dataclass(frozen=True)
class Interrupt(Rec):
    kind = "test-interrupt"

    def apply(self, ctx: Any, tx: Tx) -> dict[str, Any]:
        raise KeyboardInterrupt


def _record(ctx: Any, journal: jr.Journal, tx: Tx, db: sqlite3.Connection) -> None:
    LOG.append(f"record {journal.plan()['what']}")


def _finish(ctx: Any, journal: jr.Journal) -> None:
    LOG.append(f"finish {journal.plan()['what']}")


def _finish_other(ctx: Any, journal: jr.Journal) -> None:
    LOG.append("finish of the other kind")


runner.register("test-kind", runner.Finisher(record=_record, finish=_finish))
runner.register("test-other", runner.Finisher(record=_record, finish=_finish_other))
runner.register("test-gone", runner.Finisher(record=_record, finish=_finish, keep=False))


@dataclass
class Ctx:
    store: Any


@pytest.fixture
def ctx(tmp_path: Path):  # type: ignore[no-untyped-def]
    from volmerge.runtime.store import Store

    LOG.clear()
    FAIL_ONCE.clear()
    s = Store(tmp_path / "root")
    yield Ctx(s)
    s.close()


def _prepared(*steps: Step, no_return: str | None = None, what: str = "x") -> runner.Prepared:
    return runner.Prepared(steps=steps, from_image="a", to_image="b", plan={"what": what},
                           point_of_no_return=no_return)


def _run(ctx: Ctx, p: runner.Prepared, kind: str = "test-kind") -> runner.Finished:
    return runner.run_journaled(ctx, kind, "c", lambda: p)  # type: ignore[arg-type]


def _journal(ctx: Ctx) -> tuple[Any, list[jr.StepRow]]:
    row = ctx.store.db.execute("SELECT * FROM upgrade_journal").fetchone()
    return row, jr.Journal(ctx.store, row["id"]).steps()


def test_steps_apply_in_order_then_commit_and_finish(ctx: Ctx) -> None:
    events: list[tuple[str, str]] = []
    done = runner.run_journaled(ctx, "test-kind", "c",  # type: ignore[arg-type]
                                lambda: _prepared(Rec("a"), Rec("b"), Rec("c")),
                                progress=lambda e, t, s: events.append((e, t)))
    assert LOG == ["apply a", "apply b", "apply c", "record x", "finish x"]
    row, steps = _journal(ctx)
    assert row["id"] == done.id and row["kind"] == "test-kind" and row["state"] == "done"
    assert [(s.kind, s.args, s.state, s.undo) for s in steps] == [
        ("test-rec", {"name": n, "fail": False}, "applied", {"made": n}) for n in "abc"]
    assert [e for e in events if e[0] == "step"] == [("step", f"rec {n}") for n in "abc"]
    assert set(done.tx.timings) == {"test-rec", "test-rec#1", "test-rec#2"}


def test_a_failure_undoes_the_applied_steps_in_reverse(ctx: Ctx) -> None:
    with pytest.raises(runner.Failed) as err:
        _run(ctx, _prepared(Rec("a"), Rec("b"), Rec("c", fail=True), Rec("d")))
    assert err.value.undone and err.value.reason == "c broke"
    # the failed step is undone too (it may have done half its work), with no undo data
    assert LOG == ["apply a", "apply b", "apply c", "undo c -", "undo b b", "undo a a"]
    row, steps = _journal(ctx)
    assert row["state"] == "rolled-back" and row["error"] == "c broke"
    assert [s.state for s in steps] == ["undone", "undone", "undone", "pending"]


def test_interrupt_is_undone_then_reraised(ctx: Ctx) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(ctx, _prepared(Rec("a"), Interrupt("b")))
    assert LOG == ["apply a", "undo b -", "undo a a"]
    assert _journal(ctx)[0]["state"] == "rolled-back"


def test_past_the_point_of_no_return_recover_rolls_forward(ctx: Ctx) -> None:
    FAIL_ONCE.add("c")
    with pytest.raises(runner.Failed) as err:
        _run(ctx, _prepared(Rec("a"), NoReturn("b"), Rec("c"), Rec("d"), no_return="test-noreturn"))
    assert not err.value.undone
    assert LOG == ["apply a", "apply b", "apply c"]  # nothing undone
    row, steps = _journal(ctx)
    assert row["state"] == "begun" and row["no_return"] == 1
    assert [s.state for s in steps] == ["applied", "applied", "applying", "pending"]
    LOG.clear()
    out = runner.recover(ctx)  # type: ignore[arg-type]
    assert [d["action"] for d in out] == ["rolled forward"]
    assert LOG == ["apply c", "apply d", "record x", "finish x"]
    row, steps = _journal(ctx)
    assert row["state"] == "done" and {s.state for s in steps} == {"applied"}


def test_before_the_point_of_no_return_a_failure_is_undone(ctx: Ctx) -> None:
    with pytest.raises(runner.Failed) as err:
        _run(ctx, _prepared(Rec("a", fail=True), NoReturn("b"), no_return="test-noreturn"))
    assert err.value.undone and LOG == ["apply a", "undo a -"]


def _crashed(ctx: Ctx, kind: str, states: list[str], what: str = "x") -> jr.Journal:
    """Journal rows as a process killed mid-run leaves them."""
    steps = [Rec(n) for n in "abcd"[:len(states)]]
    j = jr.Journal.begin(ctx.store, container="c", kind=kind, from_image="a", to_image="b",
                         plan={"what": what}, steps=[s.to_journal() for s in steps])
    for i, state in enumerate(states):
        j.step_state(i, state, {"made": steps[i].name} if state == "applied" else None)
    return j


def test_recover_undoes_a_crashed_run_in_reverse_from_the_journal(ctx: Ctx) -> None:
    _crashed(ctx, "test-kind", ["applied", "applied", "applying", "pending"])
    out = runner.recover(ctx)  # type: ignore[arg-type]
    assert [(d["container"], d["action"]) for d in out] == [("c", "rolled back")]
    assert LOG == ["undo c -", "undo b b", "undo a a"]
    row, steps = _journal(ctx)
    assert row["state"] == "rolled-back" and [s.state for s in steps][:3] == ["undone"] * 3
    assert runner.recover(ctx) == []  # type: ignore[arg-type]


def test_recover_leaves_a_run_whose_lock_is_held(ctx: Ctx) -> None:
    _crashed(ctx, "test-kind", ["applied"])
    with runner.locked(ctx, "c"):  # type: ignore[arg-type]
        assert runner.recover(ctx) == []  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            _run(ctx, _prepared(Rec("z")))
    assert [d["action"] for d in runner.recover(ctx)] == ["rolled back"]  # type: ignore[arg-type]


def test_recover_finishes_a_commit_with_the_finisher_of_its_kind(ctx: Ctx) -> None:
    for kind in ("test-kind", "test-other"):
        j = _crashed(ctx, kind, ["applied"], what=kind)
        with ctx.store.transaction() as db:
            j.finish("committed", db=db)
    out = runner.recover(ctx)  # type: ignore[arg-type]
    assert [d["action"] for d in out] == ["finished commit"] * 2
    assert LOG == ["finish test-kind", "finish of the other kind"]
    states = {r["kind"]: r["state"] for r in ctx.store.db.execute("SELECT * FROM upgrade_journal")}
    assert states == {"test-kind": "done", "test-other": "done"}


def test_a_kind_that_keeps_no_journal_leaves_no_rows(ctx: Ctx) -> None:
    _run(ctx, _prepared(Rec("a")), kind="test-gone")
    with pytest.raises(runner.Failed):
        _run(ctx, _prepared(Rec("b", fail=True)), kind="test-gone")
    _crashed(ctx, "test-gone", ["applied"])
    assert [d["action"] for d in runner.recover(ctx)] == ["rolled back"]  # type: ignore[arg-type]
    assert ctx.store.db.execute("SELECT count(*) FROM upgrade_journal").fetchone()[0] == 0
    assert ctx.store.db.execute("SELECT count(*) FROM upgrade_steps").fetchone()[0] == 0


def test_unknown_kind_is_refused(ctx: Ctx) -> None:
    with pytest.raises(NotDone, match="not known"):
        runner.finisher_for("no-such-kind")
    with pytest.raises(NotDone, match="not known"):
        _run(ctx, _prepared(Rec("a")), kind="no-such-kind")
    assert LOG == []
    _crashed(ctx, "no-such-kind", ["applied"])
    _crashed(ctx, "test-kind", ["applied"])
    out = runner.recover(ctx)  # type: ignore[arg-type]
    assert [d["action"] for d in out] == ["failed", "rolled back"]
    assert "not known" in out[0]["error"] and LOG == ["undo a a"]


def test_steps_round_trip_through_the_journal() -> None:
    s = Rec("a", fail=True)
    kind, args = s.to_journal()
    assert from_journal(kind, args) == s
    assert s.reverse({"made": "a"}) == Unrec("a", "a")  # the undo is data too
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "b"  # type: ignore[misc]


def test_the_undo_is_reported_per_reversible_step(ctx: Ctx) -> None:
    events: list[str] = []
    with pytest.raises(runner.Failed):
        runner.run_journaled(ctx, "test-kind", "c",  # type: ignore[arg-type]
                             lambda: _prepared(Rec("a"), Rec("b", fail=True)),
                             progress=lambda e, t, s: events.append(f"{e} {t}"))
    assert events[-3:] == ["fail b broke", "undo undo: rec b", "undo undo: rec a"]


def test_the_upgrade_steps_reverse_as_data() -> None:
    from volmerge.upgrade import steps as st

    assert st.StopContainer("c", "app", 5.0).reverse({"was_running": True}) == \
        st.StartAgain("c", "app", 5.0)
    assert st.StopContainer("c", "app", 5.0, running=False).reverse({}) is None
    assert st.StopContainer("c", "app", 5.0).reverse({"was_running": False}) is None
    assert st.SnapshotVolume("v", "pre", restore=True).reverse({}) == st.RestoreSnapshot("v", "pre")
    assert st.SnapshotVolume("v", "post").reverse({}) is None
    assert st.MergeVolume("v", "/data", "pre", "img", "fail").reverse({}) is None
    assert st.RenameContainer("c", "app", "app.gen1", 1).reverse({}) == \
        st.NamesBack(names=(("c", "app"),))
    # cut short before its id was journaled: found by name, never the old container
    assert st.CreateContainer("app", "img", "c", {}).reverse({}) == st.RemoveContainer("app", "c")
    assert st.CreateContainer("app", "img", "c", {}).reverse({"id": "n"}) == \
        st.RemoveContainer("n", "c")
    assert st.TakeOverNetwork("c", "app", "app").reverse({"new_id": "n"}) == \
        st.HandBackNetwork("n", "c")
    assert st.StartContainer("app", "c", 3.0).reverse({}) == st.StopAgain("app", "c", 3.0)
    assert st.HealthCheck(True, "x", 1.0).reverse({}) is None
    assert st.CloneVolume("v", "v-r").reverse({}) == st.RemoveVolume("v-r")
