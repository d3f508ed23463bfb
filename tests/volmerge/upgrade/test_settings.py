"""The upgrade's settings from the environment (volmerge/upgrade/settings.py):
one reader for every ``VOLMERGE_*_MB``, all checked when an upgrade is planned."""

from __future__ import annotations

import pytest

from volmerge.errors import BadInput
from volmerge.upgrade import settings

pytestmark = pytest.mark.unit

VARS = (("VOLMERGE_SERVING_COPY_MAX_MB", settings.serving_copy_max, 256),
        ("VOLMERGE_PG_UPGRADE_MIN_MB", settings.pg_upgrade_min, 32))


@pytest.mark.parametrize(("var", "read", "default"), VARS)
def test_each_setting_is_a_whole_number_of_mib_with_its_default(monkeypatch, var, read,
                                                                default) -> None:
    monkeypatch.delenv(var, raising=False)
    assert read() == default << 20
    for raw, mib in (("0", 0), (" 64 ", 64), ("", default)):
        monkeypatch.setenv(var, raw)
        assert read() == mib << 20


@pytest.mark.parametrize(("var", "read", "default"), VARS)
@pytest.mark.parametrize("bad", ["-1", "1.5", "lots", "64M", "9" * 10])
def test_a_bad_value_is_bad_input_naming_the_variable(monkeypatch, var, read, default,
                                                      bad) -> None:
    monkeypatch.setenv(var, bad)
    with pytest.raises(BadInput, match=f"{var}=.*not a whole number of MiB"):
        read()
    with pytest.raises(BadInput, match=var):
        settings.check()  # what the planner calls before anything changes
