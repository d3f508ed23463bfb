"""The selection rule of stack pruning (volmerge/compose/stackprune.py), pure:
which stack generations and journals go, given what each container keeps."""

from __future__ import annotations

from volmerge.compose.history import ServiceStep, StackGeneration
from volmerge.compose.stackprune import JournalInfo, select


def _gen(gen: int, state: str, from_gen: int | None, jid: str | None,
         rb: str | None = None) -> StackGeneration:
    steps = (ServiceStep("db", "st-db-1", "a", "b", from_gen, None if from_gen is None
                         else from_gen + 1),
             ServiceStep("web", "st-web-1", "a", "b", from_gen, None if from_gen is None
                         else from_gen + 1))
    return StackGeneration("st", gen, steps, state, float(gen), jid, rb)


def _reach(*gens: int):  # type: ignore[no-untyped-def]
    return lambda s: s.from_gen in gens


def test_keeps_the_current_one_and_those_a_rollback_still_reaches() -> None:
    gens = [_gen(1, "current", 1, "j1"), _gen(2, "current", 2, "j2"),
            _gen(3, "current", 3, "j3")]
    journals = [JournalInfo("j1", "done", 1), JournalInfo("j2", "done", 2),
                JournalInfo("j3", "done", 3)]
    sel = select(gens, journals, _reach(3))  # the containers keep 3 (and 4, current)
    assert (sel.keep, sel.rows, sel.journals) == ((3,), (1, 2), ("j1", "j2"))
    sel = select(gens, journals, _reach(2, 3))
    assert (sel.keep, sel.rows, sel.journals) == ((2, 3), (1,), ("j1",))
    # a rollback cannot get past a generation it cannot undo: 1 goes though 1 is kept
    sel = select(gens, journals, _reach(1, 3))
    assert (sel.keep, sel.rows) == ((3,), (1, 2))
    # the stack's current generation stays even when nothing below it is kept
    sel = select(gens, journals, _reach())
    assert (sel.keep, sel.rows, sel.journals) == ((3,), (1, 2), ("j1", "j2"))


def test_failed_and_rolled_back_ones_go_once_older_than_the_last_commit() -> None:
    gens = [_gen(1, "current", 1, "j1"), _gen(2, "rolled-back", 2, "j2", rb="r2"),
            _gen(3, "failed", 1, "j3"), _gen(4, "current", 1, "j4"),
            _gen(5, "failed", 2, "j5")]
    journals = [JournalInfo("j1", "done", 1), JournalInfo("j2", "done", 2),
                JournalInfo("r2", "done", 2.5), JournalInfo("j3", "rolled-back", 3),
                JournalInfo("j4", "done", 4), JournalInfo("j5", "rolled-back", 5)]
    sel = select(gens, journals, _reach(1))
    # 4 current (from 1, kept) and 1 below it (from 1: reachable); 5 failed after
    # the last commit (j4) stays; 2 and 3 before it go, their journals too
    assert (sel.keep, sel.rows) == ((1, 4, 5), (2, 3))
    assert sel.journals == ("j2", "r2", "j3")


def test_the_rollback_that_made_the_current_state_stays() -> None:
    gens = [_gen(1, "rolled-back", 1, "j1", rb="r1"), _gen(2, "rolled-back", 2, "j2", rb="r2")]
    # 2 rolled back first (r2), then 1 (r1): r1 made the current state
    journals = [JournalInfo("j1", "done", 1), JournalInfo("j2", "done", 2),
                JournalInfo("r2", "done", 3), JournalInfo("r1", "done", 4)]
    sel = select(gens, journals, _reach(1, 2))
    assert (sel.keep, sel.rows) == ((1,), (2,))
    assert sel.journals == ("j2", "r2")  # j1 and r1: named by the kept row


def test_open_or_unknown_rows_and_no_commit_keep_everything() -> None:
    gens = [_gen(1, "failed", 1, "j1"), _gen(2, "in-progress", 1, "j2"),
            _gen(3, "from-the-future", 1, None)]
    journals = [JournalInfo("j1", "rolled-back", 1), JournalInfo("j2", "begun", 2)]
    sel = select(gens, journals, _reach())
    assert (sel.keep, sel.rows, sel.journals) == ((1, 2, 3), (), ())
    # a first upgrade's services have no from_gen: whether they can return is
    # the caller's to say (the generation that upgrade left)
    first = [_gen(1, "current", None, "j1"), _gen(2, "current", 5, "j2")]
    sel = select(first, [JournalInfo("j1", "done", 1), JournalInfo("j2", "done", 2)],
                 lambda s: s.from_gen in (None, 5))
    assert sel.keep == (1, 2)
