"""Fixtures for the compose tests that run real containers: the busybox
fixture image in the test's store, its own network namespace, and whatever a
failing test left removed before the leak guards look."""

from __future__ import annotations

from pathlib import Path

import pytest

BUSYBOX_REF = "localhost/volmerge-fixture/busybox:latest"


@pytest.fixture
def image(store, fixture_image) -> str:
    from volmerge.runtime.images import ImageStore

    ImageStore(store).load(fixture_image("busybox"))
    return BUSYBOX_REF


@pytest.fixture(autouse=True)
def remove_containers(tmp_path: Path):
    yield
    root = tmp_path / "root"
    if not (root / "state.db").exists():
        return
    from volmerge.context import make_engine
    from volmerge.runtime.store import Store

    st = Store(root, sweep=False)
    try:
        eng = make_engine(st)
        for c in eng.list(all=True):
            try:
                eng.remove(c.id, force=True)
            except Exception:  # noqa: BLE001
                pass
    finally:
        st.close()
