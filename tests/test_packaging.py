"""What `pip install` puts into site-packages: volmerge and nothing else at the
top (issue: `runtime`, `strategies` and `fixtures` are names of other PyPI
distributions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_only_the_volmerge_package(tmp_path: Path) -> None:
    # built from a copy: setuptools writes build/ and *.egg-info into the tree
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*cache*", ".cache", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("volmerge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"volmerge"}
    for sub in ("runtime/store.py", "strategies/tree.py", "strategies/sql/replay.py",
                "fixtures/images.py", "runtime/network/manager.py",
                # what `volmerge demo` builds its images with
                "demoimages/cache.py", "demoimages/app/server.py", "demoimages/app/policy.toml",
                "demoimages/app/pgwire.py", "demoimages/app/pgnotes.py"):
        assert f"volmerge/{sub}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "= strategies." not in text and "= volmerge.strategies.text:TextStrategy" in text


def test_the_checkout_links_the_three_folders_into_the_package() -> None:
    import volmerge.runtime.store
    import volmerge.strategies.tree

    for name in ("runtime", "strategies", "fixtures"):
        link = ROOT / "volmerge" / name
        assert link.is_symlink() and link.resolve() == ROOT / name
    assert Path(volmerge.runtime.store.__file__).resolve() == ROOT / "runtime" / "store.py"
    assert Path(volmerge.strategies.tree.__file__).resolve() == ROOT / "strategies" / "tree.py"
