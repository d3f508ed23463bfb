"""A third-party strategy, installed as a real distribution into the running
venv (offline: a wheel built here), is found through the entry-point group,
passes the conformance suite and is used by merge_trees through a policy."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from volmerge.strategies import registry
from volmerge.strategies.policy import parse_policy
from volmerge.strategies.tree import merge_trees

from .conformance import check_strategy
from .treeutil import read, three

DIST = "volmerge_testplugin"
PLUGIN = '''
from volmerge.strategies.base import FileReport, MergeResult
from volmerge.strategies.identity import trivial_merge


class ConcatStrategy:
    """Log files: keep both sides' new lines, ours first."""

    name = "concat"

    def handles(self, path, sample):
        return path.endswith(".log")

    def merge(self, path, base, ours, theirs, opts):
        done = trivial_merge(self.name, path, base, ours, theirs)
        if done is not None:
            return done
        base = base or b""
        return MergeResult(ours + theirs[len(base):] if theirs.startswith(base) else ours + theirs,
                           FileReport(path, "merged", self.name))
'''


def _wheel(tmp: Path) -> Path:
    files = {
        f"{DIST}/__init__.py": PLUGIN.encode(),
        f"{DIST}-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: volmerge-testplugin\nVersion: 0.1\n",
        f"{DIST}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: volmerge-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{DIST}-0.1.dist-info/entry_points.txt": (
            f"[volmerge.strategies]\nconcat = {DIST}:ConcatStrategy\n"
            f"broken = {DIST}.missing:Nothing\n").encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{DIST}-0.1.dist-info/RECORD,,")
    files[f"{DIST}-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    whl = tmp / f"{DIST}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return whl


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args,
                    "--no-cache-dir" if args[0] == "install" else "-y"],
                   check=True, capture_output=True, timeout=120)


@pytest.fixture
def plugin(tmp_path: Path):  # type: ignore[no-untyped-def]
    _pip("install", "--no-deps", "--no-index", str(_wheel(tmp_path)))
    registry.refresh()
    try:
        yield
    finally:
        _pip("uninstall", "volmerge-testplugin")
        sys.modules.pop(DIST, None)
        registry.refresh()


def test_plugin_is_registered_conforms_and_is_used(plugin, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    s = registry.get_strategy("concat")
    assert type(s).__name__ == "ConcatStrategy"
    assert "broken" in registry.load_errors()  # reported, and nothing else broke
    assert check_strategy(s, tmp_path / "conf") >= 1

    b, o, t = three(tmp_path, {"app.log": b"a\n"}, {"app.log": b"a\nours\n"}, {"app.log": b"a\ntheirs\n"})
    pol = parse_policy('[[rule]]\nglob = "*.log"\nstrategy = "concat"\n')
    rep = merge_trees(b, o, t, tmp_path / "out", policy=pol)
    assert read(tmp_path / "out") == {"app.log": b"a\nours\ntheirs\n"}
    assert rep.files[0].strategy == "concat"

    listing = cli("strategies", "--json")
    assert listing.returncode == 0
    rows = {r["name"]: r for r in __import__("json").loads(listing.stdout)}
    assert rows["concat"]["status"] == "ok" and rows["broken"]["status"] == "error"


def test_plugin_is_gone_after_uninstall() -> None:
    assert "concat" not in registry.all_strategies()
