"""What a failing test left in its store, removed before the leak guards
look: shared by the conftest files whose tests run containers."""

from __future__ import annotations

from pathlib import Path


def remove_containers_in(root: Path) -> None:
    """Remove every container of the store at ``root`` (with the engine the CLI
    uses, so a container on a network is disconnected too); nothing when the
    test made no store there."""
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
            except Exception:  # noqa: BLE001 - best effort: the leak guard reports what stays
                pass
    finally:
        st.close()
