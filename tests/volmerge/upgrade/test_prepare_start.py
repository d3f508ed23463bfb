"""The step that prepares the successor's start while the old version serves
(staging.PrepareStart): its undo is data, rebuilt from the journal."""

from __future__ import annotations

import pytest

from volmerge.upgrade import steps as st
from volmerge.upgrade.staging import PrepareStart, UnprepareStart

pytestmark = pytest.mark.unit


def test_its_undo_names_the_successor_or_its_name_when_cut_short() -> None:
    step = PrepareStart(name="app", old_id="old", ip="10.88.0.2")
    assert step.reverse({"id": "new"}) == UnprepareStart(ref="new", keep_id="old")
    assert step.reverse({}) == UnprepareStart(ref="app", keep_id="old")  # killed while applying


def test_it_goes_through_the_journal_and_old_rows_without_ip_still_load() -> None:
    step = PrepareStart(name="app", old_id="old", ip="10.88.0.2")
    kind, args = step.to_journal()
    assert kind == "prepare-start" and st.from_journal(kind, args) == step
    assert st.from_journal("prepare-start", {"name": "app", "old_id": "old"}).ip is None
    assert "network namespace" in step.describe()
    assert "network" not in PrepareStart(name="app", old_id="old").describe()
