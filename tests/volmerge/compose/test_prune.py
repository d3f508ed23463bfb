"""`volmerge prune` and `volmerge compose prune` on a compose stack: the stack
generations `compose rollback` can no longer return to and their journals go
with the services' generations, `compose rollback` still works, a dry run
changes nothing, an open stack journal refuses.  Real containers, the CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from .test_upgrade import _write

pytestmark = pytest.mark.usefixtures("own_netns")


def _rows(root: Path) -> tuple[list[tuple], list[tuple], list[tuple], int]:
    """The stack's rows, its journals, the services' generations, the step rows."""
    conn = sqlite3.connect(f"file:{root / 'state.db'}?mode=ro", uri=True)
    try:
        stack = conn.execute("SELECT gen, state, journal_id, rollback_journal "
                             "FROM compose_generations ORDER BY gen").fetchall()
        journals = conn.execute("SELECT id, container, state FROM upgrade_journal "
                                "ORDER BY started").fetchall()
        gens = conn.execute("SELECT container, gen, state FROM generations "
                            "ORDER BY container, gen").fetchall()
        (steps,) = conn.execute("SELECT count(*) FROM upgrade_steps").fetchone()
        return stack, journals, gens, steps
    finally:
        conn.close()


def _upgrade(cli, c: list[str], tmp_path: Path, db: str, web: str) -> int:  # type: ignore[no-untyped-def]
    _write(tmp_path, db, web)
    return cli(*c, "upgrade", "--health-timeout", "20").returncode


def test_a_stack_pruned_keeps_what_compose_rollback_needs(cli, root, app_images, tmp_path):
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert _upgrade(cli, c, tmp_path, "2", "2") == 0      # stack generation 1
    assert _upgrade(cli, c, tmp_path, "3", "3") == 0      # 2
    assert _upgrade(cli, c, tmp_path, "1", "bad") == 1    # 3: web fails, both put back
    before = _rows(root)
    stack, journals, _gens, _steps = before
    assert [(g, s) for g, s, _j, _r in stack] == [(1, "current"), (2, "current"), (3, "failed")]
    j1 = stack[0][2]

    # bad input: one line, exit 2, nothing changed
    for args, needle in ((["prune", "stack:ghost"], "no such stack: ghost"),
                         ([*c, "prune", "--keep", "0"], "--keep"),
                         (["prune", "stack:st", "--keep", "0"], "--keep")):
        p = cli(*args)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)
        assert len(p.stderr.splitlines()) == 1, p.stderr
    assert _rows(root) == before

    # a dry run says what would go and changes nothing
    p = cli("prune", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    reps = json.loads(p.stdout)
    by = {r.get("container") or f"stack:{r['stack']}": r for r in reps}
    assert set(by) == {"st-db-1", "st-web-1", "stack:st"}
    assert by["st-db-1"]["keep"] == [2, 3] and by["st-db-1"]["generations"] == [1]
    # 2 is what the containers' kept generations let `compose rollback` undo;
    # 3 failed after the last commit: it tells how the current state came about
    assert by["stack:st"] == {"stack": "st", "keep": [2, 3], "generations": [1],
                              "journals": [j1], "dry_run": True}
    text = cli(*c, "prune", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "stack generation 1" in text.stdout and j1 in text.stdout
    assert "Would remove 2 generation(s) and 1 stack generation(s)" in text.stdout
    assert _rows(root) == before

    p = cli(*c, "prune", "--json")
    assert p.returncode == 0, p.stderr
    assert [r.get("stack") for r in json.loads(p.stdout)] == [None, None, "st"]
    stack, journals, gens, steps = _rows(root)
    assert [g for g, *_ in stack] == [2, 3]
    assert j1 not in [j for j, *_ in journals] and j1 in [j for j, *_ in before[1]]
    assert steps < before[3]
    assert [(n, g) for n, g, _s in gens] == [("st-db-1", 2), ("st-db-1", 3),
                                              ("st-web-1", 2), ("st-web-1", 3)]
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [(g["generation"], g["state"]) for g in hist] == [(2, "current"), (3, "failed")]

    # compose rollback still returns to what generation 2 left
    p = cli(*c, "rollback", "--discard-new-data")
    assert p.returncode == 0, p.stderr
    rows = {r["Service"]: r["Image"] for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert rows == {"db": "localhost/app:2", "web": "localhost/app:2"}

    # that rollback is now the last commit: the failed attempt before it goes,
    # the rolled-back generation 2 (its rollback made the current state) stays
    p = cli("prune", "stack:st", "--json")
    assert p.returncode == 0, p.stderr
    *_, srep = json.loads(p.stdout)
    assert (srep["keep"], srep["generations"]) == ([2], [3])
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [(g["generation"], g["state"]) for g in hist] == [(2, "rolled-back")]
    assert "Nothing to prune" in cli(*c, "prune").stdout
    # a container pruned by name takes the history of the stack it served in along
    p = cli("prune", "st-db-1", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    assert [r.get("container") or r["stack"] for r in json.loads(p.stdout)] == ["st-db-1", "st"]
    p = cli(*c, "rollback")
    assert p.returncode == 2 and "no stack upgrade to roll back" in p.stderr, p.stderr


def test_an_open_stack_journal_refuses_prune(cli, root, app_images, tmp_path):
    from volmerge.runtime.store import Store

    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert _upgrade(cli, c, tmp_path, "2", "2") == 0
    _write(tmp_path, "1", "1")
    p = cli(*c, "upgrade", "--health-timeout", "20",
            env={"VOLMERGE_FAULT": "stack.before-stop#1"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    st = Store(root, sweep=False)
    try:  # web's lock held: every command's recovery leaves the journal open
        with st.lock("upgrade-st-web-1", blocking=False):
            before = _rows(root)
            assert [s for _j, n, s in before[1] if n == "stack:st"] == ["done", "begun"]
            for args in (["prune"], ["prune", "stack:st"], [*c, "prune"],
                         ["prune", "st-db-1", "--dry-run"]):
                p = cli(*args)
                assert p.returncode == 2, (args, p.stderr)
                assert p.stderr.count("\n") == 1 and "run `volmerge recover` first" in p.stderr \
                    and "cannot prune stack:st: stack st has an unfinished" in p.stderr, p.stderr
            with st.lock("upgrade-stack:st", blocking=False):  # as a live compose upgrade
                p = cli("prune", "stack:st")
            assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
            assert "cannot prune stack:st: another upgrade, rollback or rehearsal of stack:st " \
                "is running" in p.stderr, p.stderr
            assert _rows(root) == before
        assert cli("recover").returncode == 0
        with st.lock("compose-st", blocking=False):  # a compose command of the project
            p = cli("prune")
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "cannot prune stack:st: project st: another compose upgrade" in p.stderr, p.stderr
    finally:
        st.close()
    p = cli(*c, "prune", "--json")
    assert p.returncode == 0, p.stderr
    hist = json.loads(cli(*c, "history", "--json").stdout)
    assert [(g["generation"], g["state"]) for g in hist] == [(1, "current"), (2, "failed")]
