"""Property tests draw the same examples on every run of the suite (the
"ci" hypothesis profile, tests/conftest.py): a failure in CI is a
regression, never a lucky draw.  VOLMERGE_HYPOTHESIS=explore is for
searching new examples locally."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.conftest import ROOT_DIR

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)


def _property_tests() -> Iterator[tuple[str, settings]]:
    for path in sorted((ROOT_DIR / "tests").rglob("test_*.py")):
        name = ".".join(Path(path).relative_to(ROOT_DIR).with_suffix("").parts)
        module = importlib.import_module(name)  # imported already by the collection
        for attr, fn in sorted(vars(module).items()):
            s = getattr(fn, "_hypothesis_internal_use_settings", None)
            if s is not None and callable(fn):
                yield f"{name}::{attr}", s


def test_every_property_test_is_derandomized() -> None:
    """Every property test follows the loaded profile: the ci one (derandomized,
    no database) unless VOLMERGE_HYPOTHESIS=explore, where none may pin itself
    to fixed draws either."""
    found = dict(_property_tests())
    assert len(found) >= 10, sorted(found)  # the scan sees the suite's property tests
    profile = settings.default
    if os.environ.get("VOLMERGE_HYPOTHESIS") != "explore":
        assert profile.derandomize and profile.database is None, "the ci profile is not loaded"
    odd = sorted(n for n, s in found.items()
                 if s.derandomize != profile.derandomize
                 or (s.database is None) != (profile.database is None))
    assert odd == [], f"property tests that draw at random or keep a database: {odd}"
