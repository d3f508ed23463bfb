"""The docs are tested (architecture.md, principle 10): every command has help text and
appears in README.md."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

try:  # typer >= 0.29 vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

from volmerge.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group, prefix: str = "") -> list:  # type: ignore[no-untyped-def]
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        full = f"{prefix} {name}".strip()
        out.append((full, cmd))
        if hasattr(cmd, "list_commands"):
            out.extend(_commands(cmd, full))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_there_are_commands() -> None:
    assert COMMANDS


def test_every_command_has_help() -> None:
    missing = [name for name, cmd in COMMANDS if not (cmd.help or cmd.short_help)]
    assert not missing, f"commands without help: {missing}"


def test_every_command_is_in_the_readme() -> None:
    missing = [
        name for name, _ in COMMANDS
        if not re.search(r"volmerge " + re.escape(name) + r"\b", README)
    ]
    assert not missing, f"commands missing from README.md: {missing}"


def test_readme_keeps_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README


ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


def _module_map_names() -> set[str]:
    """Every module the architecture page's module map names, as a path
    relative to the repository ("runtime/network/hosts.py"); a row may
    name several (``a.py`` / ``b.py``) and a package's folder names its
    files in the row's text."""
    names: set[str] = set()
    section = None
    for line in ARCHITECTURE.splitlines():
        m = re.match(r"### (\w+)/$", line)
        if m:
            section = m.group(1)
            continue
        if line.startswith("## "):
            section = None
        if section and line.startswith("| `"):
            cells = line.split("|")
            first, rest = cells[1], "|".join(cells[2:])
            for mod in re.findall(r"`([\w/]+(?:\.py)?)`", first):
                names.add(f"{section}/{mod}")
            folder = re.findall(r"`([\w/]+/)`", first)
            for sub in folder:
                for mod in re.findall(r"`(\w+\.py)`", rest):
                    names.add(f"{section}/{sub}{mod}")
                names.add(f"{section}/{sub}")
    return names


def test_every_module_is_in_the_architecture_page() -> None:
    named = _module_map_names()
    missing = [
        rel for pkg in ("volmerge", "runtime", "strategies")
        for rel in (p.relative_to(ROOT).as_posix() for p in sorted((ROOT / pkg).rglob("*.py")))
        # a package's __init__.py needs no row of its own
        if rel not in named and not rel.endswith("/__init__.py")
    ]
    assert not missing, f"modules missing from docs/architecture.md's module map: {missing}"


def test_architecture_page_names_no_missing_module() -> None:
    named = _module_map_names()
    gone = sorted(n for n in named if not (ROOT / n).exists())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_link_in_the_docs_resolves() -> None:
    """Relative links in README.md and docs/ name files (and headings) that exist."""
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
                continue
            if anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
                if anchor not in slugs:
                    broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, f"broken links: {broken}"


def test_every_doc_the_code_names_exists() -> None:
    """Every Markdown file under docs/ that a module mentions is there."""
    missing = []
    for pkg in ("volmerge", "runtime", "strategies", "fixtures", "tests", "bench"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for ref in re.findall(r"\bdocs/[\w/.-]*\w\.md", path.read_text()):
                if not (ROOT / ref).exists():
                    missing.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not missing, f"code names docs that do not exist: {missing}"
