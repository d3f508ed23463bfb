"""Several containers' runs as one journal (upgrade/group.py), on the runner
alone: no containers, no root (the steps and kinds of test_runner.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from volmerge.upgrade import group, runner
from volmerge.upgrade import journal as jr
from volmerge.upgrade.steps import Tx

from .test_runner import LOG, Ctx, Rec

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


@pytest.fixture
def sctx(tmp_path: Path):  # type: ignore[no-untyped-def]
    from volmerge.runtime.store import Store

    LOG.clear()
    s = Store(tmp_path / "root")
    yield Ctx(s)
    s.close()


def _member(label: str, *steps: Rec) -> group.Member:
    p = runner.Prepared(steps=steps, from_image=f"{label}:1", to_image=f"{label}:2",
                        plan={"what": label})
    return group.Member(label, f"p-{label}-1", "test-kind", p)


def _stack(*members: group.Member) -> runner.Prepared:
    return group.combine("p", list(members))


def _run(sctx: Ctx, p: runner.Prepared) -> runner.Finished:
    return runner.run_journaled(sctx, group.STACK, "stack:p", lambda: p,  # type: ignore[arg-type]
                                members=("p-db-1", "p-web-1"))


def test_a_stack_is_one_journal_each_part_recorded_by_its_own_kind(sctx: Ctx) -> None:
    done = _run(sctx, _stack(_member("db", Rec("a"), Rec("b")), _member("web", Rec("c"))))
    assert LOG == ["apply a", "apply b", "apply c", "record db", "record web",
                   "finish web", "finish db"]
    rows = sctx.store.db.execute("SELECT * FROM upgrade_journal").fetchall()
    assert [(r["id"], r["kind"], r["container"], r["state"]) for r in rows] == [
        (done.id, "stack", "stack:p", "done")]
    assert jr.members(rows[0]) == ["stack:p", "p-db-1", "p-web-1"]
    assert [(h["type"], h["id"]) for h in jr.history(sctx.store, "p-web-1")] == [
        ("stack", done.id)]
    kinds = [s.kind for s in jr.Journal(sctx.store, done.id).steps()]
    assert kinds == ["part", "test-rec", "test-rec", "part", "test-rec"]
    assert set(done.tx.timings) >= {"db.downtime", "web.downtime"}


def test_a_failure_in_the_second_part_undoes_the_first_too(sctx: Ctx) -> None:
    with pytest.raises(runner.Failed) as err:
        _run(sctx, _stack(_member("db", Rec("a")), _member("web", Rec("b"), Rec("c", fail=True))))
    assert LOG == ["apply a", "apply b", "apply c", "undo c -", "undo b b", "undo a a"]
    assert isinstance(err.value.prepared.tx, group.GroupTx)
    assert err.value.prepared.tx.current == 1  # the part that failed: web
    (state,) = sctx.store.db.execute("SELECT state FROM upgrade_journal").fetchone()
    assert state == "rolled-back"


@dataclass(frozen=True)
class Stop(Rec):
    """A stop of the old container: its undo starts it again."""

    kind = "test-stop"
    restarts_on_undo = True


def test_the_old_containers_start_again_last_in_the_order_they_stopped(sctx: Ctx) -> None:
    """The application's restart waits for the database's volume to be back,
    and the database starts before the application."""
    with pytest.raises(runner.Failed):
        _run(sctx, _stack(_member("db", Stop("stop-db"), Rec("db-volume")),
                          _member("web", Stop("stop-web"), Rec("web-volume"),
                                  Rec("health", fail=True))))
    assert LOG[-5:] == ["undo health -", "undo web-volume web-volume", "undo db-volume db-volume",
                        "undo stop-db stop-db", "undo stop-web stop-web"]


def _crashed(sctx: Ctx) -> jr.Journal:
    """A stack journal as a SIGKILL after db's step leaves it: begun, one
    step applied."""
    p = _stack(_member("db", Rec("a")), _member("web", Rec("b")))
    j = jr.Journal.begin(sctx.store, container="stack:p", kind=group.STACK, from_image="",
                         to_image="", plan=p.plan, steps=[s.to_journal() for s in p.steps])
    j.step_state(0, "applied", {})
    j.step_state(1, "applied", {"made": "a"})
    return j


def test_a_member_s_recovery_undoes_the_stack_journal_unless_a_member_is_busy(sctx: Ctx) -> None:
    j = _crashed(sctx)
    with sctx.store.lock("upgrade-p-web-1"):  # a live transaction holds a member
        assert runner.recover(sctx, container="p-db-1") == []  # type: ignore[arg-type]
    assert runner.recover(sctx, container="other") == []  # type: ignore[arg-type]
    assert LOG == []
    done = runner.recover(sctx, container="p-db-1")  # type: ignore[arg-type]
    assert [d["action"] for d in done] == ["rolled back"] and LOG == ["undo a a"]
    assert j.row()["state"] == "rolled-back"


def test_group_tx_gives_each_part_its_own_fields() -> None:
    parts = [Tx(), Tx()]
    tx = group.GroupTx(parts=parts, labels=["db", "web"])
    tx.enter(0)
    tx.new_id, tx.reports["dbdata"] = "db-new", {"merged": 1}
    tx.timings["merge"] = 1.0
    tx.enter(1)
    assert tx.new_id is None and tx.reports == {}
    tx.new_id, tx.reports["webdata"] = "web-new", {"merged": 2}
    tx.flush()
    assert [p.new_id for p in parts] == ["db-new", "web-new"]
    assert tx.reports == {"dbdata": {"merged": 1}, "webdata": {"merged": 2}}
    assert tx.timings["db.merge"] == 1.0 and {"db.downtime", "web.downtime"} <= set(tx.timings)


def test_a_fault_point_dies_at_its_nth_arrival() -> None:
    code = ("from volmerge.volumes import faults\n"
            "for i in range(3):\n"
            "    faults.point('x.step'); print(i, flush=True)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"VOLMERGE_FAULT": "x.step#3", "PATH": "/usr/bin:/bin"})
    assert p.returncode == -9 and p.stdout == "0\n1\n", p
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"VOLMERGE_FAULT": "x.step", "PATH": "/usr/bin:/bin"})
    assert p.returncode == -9 and p.stdout == "", p
