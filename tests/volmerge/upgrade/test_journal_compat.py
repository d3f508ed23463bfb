"""Journal rows written by the volmerge before the one runner (schema v1 of
the ``upgrades`` component, steps journaled as ``**args``) are migrated and
recovered by this one."""

from __future__ import annotations

import json
import time
from pathlib import Path

from volmerge.upgrade import journal as jr


def _old_journal(db, jid: str, kind: str, steps: list[tuple[str, dict, str, dict | None]]) -> None:  # type: ignore[no-untyped-def]
    """What the old Journal.begin and step_state wrote (no ``no_return``)."""
    db.execute("INSERT INTO upgrade_journal (id, container, kind, state, from_image, to_image,"
               " plan, started) VALUES (?, 'app', ?, 'begun', 'a:1', 'a:2', '{}', ?)",
               (jid, kind, time.time()))
    for i, (k, args, state, undo) in enumerate(steps):
        db.execute("INSERT INTO upgrade_steps (journal_id, idx, kind, args, state, undo)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (jid, i, k, json.dumps(args), state, json.dumps(undo) if undo else None))


def _v1_store(root: Path):  # type: ignore[no-untyped-def]
    from volmerge.runtime.store import Store

    s = Store(root)
    s.ensure_schema(jr.COMPONENT, jr.MIGRATIONS[:1])
    return s


ROLLBACK_STEPS = [
    ("stop", {"id": "c2", "name": "app", "timeout": 10.0, "running": True}, "applied", {}),
    ("swapnames", {"name": "app", "current_id": "c2", "parked": "app.gen2", "target_id": "c1",
                   "target_name": "app.gen1"}, "applied", {}),
    ("movenet", {"from_id": "c2", "to_id": "c1"}, "applied", {}),
    ("volrollback", {"volume": "v", "tag": "t", "keep_as": None}, "applying", None),
    ("volrollback", {"volume": "w", "tag": "t", "keep_as": None}, "pending", None),
    ("restorebase", {"volume": "v", "target": "/data", "image_id": "i"}, "pending", None),
    ("starttarget", {"target_id": "c1", "name": "app", "gen": 1}, "pending", None),
]


def test_the_migration_gives_old_rollbacks_their_point_of_no_return(tmp_path: Path) -> None:
    s = _v1_store(tmp_path / "root")
    with s.transaction() as db:
        _old_journal(db, "r1", "rollback", ROLLBACK_STEPS)
        _old_journal(db, "r2", "rollback", [ROLLBACK_STEPS[0], ROLLBACK_STEPS[-1]])  # no volumes
        _old_journal(db, "u1", "upgrade", [ROLLBACK_STEPS[0]])
    s.close()
    from volmerge.runtime.store import Store

    s = Store(tmp_path / "root")
    try:
        rows = {r["id"]: r["no_return"] for r in jr.pending(s)}  # migrates
        assert rows == {"r1": 3, "r2": None, "u1": None}
    finally:
        s.close()


def test_old_steps_are_rebuilt_from_their_args() -> None:
    from volmerge.upgrade import rollback, steps  # noqa: F401  (registers the rollback steps)

    old_upgrade = [
        ("stop", {"id": "c", "name": "app", "timeout": 10.0, "running": True}),
        ("snapshot", {"volume": "v", "tag": "upgrade-j-pre", "restore": True}),
        ("merge", {"volume": "v", "target": "/data", "at": "upgrade-j-pre", "image": "a:2",
                   "on_conflict": "fail"}),
        ("rename", {"id": "c", "old_name": "app", "new_name": "app.gen1", "gen": 1}),
        ("create", {"name": "app", "image": "a:2", "old_id": "c", "options": {"image": "a:2"}}),
        ("takeover", {"old_id": "c", "old_name": "app", "name": "app"}),
        ("start", {"name": "app", "old_id": "c", "timeout": 10.0}),
        ("health", {"check": True, "source": "HEALTHCHECK of a:2", "timeout": 60.0}),
    ]
    for kind, args in old_upgrade + [(k, a) for k, a, _, _ in ROLLBACK_STEPS]:
        step = steps.from_journal(kind, args)
        again = step.to_journal()
        assert again[0] == kind and {k: v for k, v in again[1].items() if k in args} == args


def test_an_old_upgrade_cut_short_is_undone_by_recover(root: Path) -> None:
    """A v1 store with an upgrade killed during its merge: recover rolls the
    volume back to the pre-upgrade snapshot, as the old recover did."""
    from volmerge.context import Context
    from volmerge.runtime.store import Store

    s = _v1_store(root)
    ctx = Context(s)
    ctx.volumes.create("v")
    (ctx.volumes.live_upper("v") / "mine.txt").write_text("mine\n")
    snap = ctx.volumes.snapshot("v", tag="upgrade-j-pre")
    (ctx.volumes.live_upper("v") / "merged.txt").write_text("half a merge\n")
    with s.transaction() as db:
        _old_journal(db, "j", "upgrade", [
            ("snapshot", {"volume": "v", "tag": "upgrade-j-pre", "restore": True}, "applied",
             {"snapshot": snap.id}),
            ("merge", {"volume": "v", "target": "/data", "at": "upgrade-j-pre", "image": "a:2",
                       "on_conflict": "fail"}, "applying", None),
            ("snapshot", {"volume": "v", "tag": "upgrade-j-post", "restore": False}, "pending",
             None),
        ])
    s.close()

    from volmerge.upgrade import recover

    s = Store(root)
    ctx = Context(s)
    try:
        out = recover(ctx)
        assert [(d["id"], d["action"]) for d in out] == [("j", "rolled back")]
        with ctx.volumes.view("v") as v:
            assert sorted(p.name for p in v.iterdir()) == ["mine.txt"]
        row = jr.Journal(s, "j").row()
        assert row["state"] == "rolled-back"
        assert [st.state for st in jr.Journal(s, "j").steps()] == ["undone", "undone", "pending"]
    finally:
        ctx.volumes.remove("v", force=True)
        s.close()
