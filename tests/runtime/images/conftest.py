"""Fixtures for the image store tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.podman import podman
from volmerge.runtime.images import ImageStore
from volmerge.runtime.store import Store

__all__ = ["podman"]


@pytest.fixture
def images(store: Store) -> ImageStore:
    return ImageStore(store)


def store_is_empty(root: Path) -> None:
    """Nothing partial anywhere in the store after a refused load."""
    for sub in ("layers", "tmp", "blobs/sha256", "l"):
        left = os.listdir(root / sub)
        assert left == [], f"{sub} not empty: {left}"
    import sqlite3

    db = sqlite3.connect(root / "state.db")
    try:
        for table in ("images", "layers", "image_layers", "tags"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        db.close()
