from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.runtime.store import Store
from volmerge.volumes import VolumeManager


@pytest.fixture
def vm(root: Path):
    store = Store(root)
    yield VolumeManager(store)
    store.close()
