"""``tests/`` is shaped like the packages (docs/architecture.md, "Tests and
benchmarks"): every folder of tests names a package or module of the
source tree, so the tests of a module are found where the module is."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Suites of a flow rather than a package: whole upgrades through the CLI,
# and the harness around a registry the tests start.
FLOWS = {"e2e", "registry"}


def _test_folders() -> list[Path]:
    return sorted(p.parent.relative_to(ROOT / "tests")
                  for p in (ROOT / "tests").rglob("test_*.py")
                  if p.parent != ROOT / "tests" and "__pycache__" not in p.parts)


def test_every_test_folder_mirrors_a_package_or_module() -> None:
    strays = []
    for rel in _test_folders():
        if rel.parts[0] in FLOWS:
            continue
        src = ROOT.joinpath(*rel.parts)
        if not ((src / "__init__.py").is_file() or src.with_suffix(".py").is_file()):
            strays.append(str(rel))
    assert strays == [], f"test folders that mirror no package: {strays}"
