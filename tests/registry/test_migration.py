"""The images schema v2 (repository digests) on a store written by v1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.runtime.images.builders import E, image_files, layer_tar, write_dir
from volmerge.runtime.images import ImageStore
from volmerge.runtime.store import Store


def test_v1_store_is_migrated_and_keeps_its_images(root: Path, tmp_path: Path) -> None:
    st = Store(root)
    try:
        img = ImageStore(st).load(write_dir(image_files([layer_tar([E("f", data=b"1")])]),
                                            tmp_path / "l"))
    finally:
        st.close()
    # back to what a v1 volmerge wrote: no repo_digests table, version 1
    with sqlite3.connect(root / "state.db") as db:
        db.execute("DROP TABLE repo_digests")
        db.execute("UPDATE schema_version SET version = 1 WHERE component = 'images'")
    st = Store(root)
    try:
        again = ImageStore(st).get(img.id)
        assert again.repo_digests == [] and again.tags == img.tags
        with sqlite3.connect(root / "state.db") as db:
            assert db.execute("SELECT version FROM schema_version WHERE component='images'"
                              ).fetchone()[0] == 2
    finally:
        st.close()
