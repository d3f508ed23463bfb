"""Every registered strategy (entry-point group volmerge.strategies) passes
the conformance suite; broken entry points are reported, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.strategies.base import FileStrategy, Strategy
from volmerge.strategies.errors import BadInput
from volmerge.strategies.registry import all_strategies, get_strategy, load_errors, registry

from .conformance import check_strategy

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

NAMES = sorted(all_strategies())


def test_builtins_are_registered() -> None:
    assert {"text", "structured", "ours", "theirs", "binary"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_conformance(name: str, tmp_path: Path) -> None:
    s = get_strategy(name)
    assert isinstance(s, (Strategy, FileStrategy)) and s.name == name
    handled = check_strategy(s, tmp_path)
    assert handled, f"{name} handles none of the conformance samples"


def test_load_errors_are_reported_not_raised() -> None:
    for name, err in load_errors().items():
        assert registry()[name].strategy is None and err
        with pytest.raises(BadInput, match="failed to load"):
            get_strategy(name)
    with pytest.raises(BadInput, match="unknown merge strategy"):
        get_strategy("no-such-strategy")
