"""upgrade.space: what the merge may write, from the trees (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from volmerge.errors import BadInput
from volmerge.upgrade.space import MARGIN, SpaceEstimate, check, estimate, volume_bytes


def _tree(top: Path, files: dict[str, int]) -> Path:
    for rel, n in files.items():
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * n)
    return top


def test_volume_bytes_counts_the_image_paths_at_the_larger_size(tmp_path: Path) -> None:
    theirs = _tree(tmp_path / "theirs", {"app.db": 100, "conf/a.ini": 10, "new.txt": 5})
    low = _tree(tmp_path / "l0", {"app.db": 300, "only-ours.bin": 10_000})
    live = _tree(tmp_path / "l1", {"app.db": 200, "conf/a.ini": 50})
    # app.db: 300 (the largest the volume had), a.ini: 50, new.txt: 5; only-ours.bin stays
    assert volume_bytes(theirs, [low, live]) == 355


def test_volume_bytes_never_follows_a_symlink(tmp_path: Path) -> None:
    theirs = _tree(tmp_path / "theirs", {"d/f": 1})
    ours = tmp_path / "ours"
    ours.mkdir()
    big = _tree(tmp_path / "elsewhere", {"f": 1_000_000})
    os.symlink(big, ours / "d")
    assert volume_bytes(theirs, [ours]) == 1


def test_check_refuses_with_the_estimate(tmp_path: Path) -> None:
    est = estimate(tmp_path, 10)
    assert est.needed == 10 + MARGIN and est.free > 0 and est.filesystem.startswith("/")
    if est.enough:
        check(est, "app")  # no error
    with pytest.raises(BadInput, match=r"^not enough space to upgrade app: ~3MB needed on /x "
                       r"\(tmpfs\), 1MB free; nothing was stopped: free ~2MB and run"):
        check(SpaceEstimate(3_000_000, 1_000_000, "/x", "tmpfs"), "app")
    check(None, "app")
    assert SpaceEstimate(1, 1, "/x", "ext4").to_json() == {
        "needed": 1, "free": 1, "filesystem": "/x", "type": "ext4", "enough": True}


@pytest.mark.parametrize(("image_has", "extra"), [(None, 2 * 1_003), ("16", 2 * 1_003),
                                                  ("15", 0)])
def test_volume_bytes_counts_a_postgresql_major_upgrade(tmp_path: Path, image_has: str | None,
                                                        extra: int) -> None:
    """A data directory of 15 and an image without /usr/lib/postgresql/15:
    the major upgrade copies it and writes a second one (twice its size)."""
    root = tmp_path / "image"
    theirs = root / "var/lib/postgresql/data"
    theirs.mkdir(parents=True)
    if image_has:
        (root / "usr/lib/postgresql" / image_has / "bin").mkdir(parents=True)
    ours = _tree(tmp_path / "l0", {"PG_VERSION": 0, "base/1": 1_000})
    (ours / "PG_VERSION").write_text("15\n")
    target = "/var/lib/postgresql/data"
    assert volume_bytes(theirs, [ours], target) == extra
    assert volume_bytes(theirs, [ours]) == 0  # no target: not counted
