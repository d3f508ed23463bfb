"""The global options' state (the store from ``--root``), without typer:
shared by the typer commands and the fast ``run`` path (fastrun.py)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any


class Globals:
    """The global options (``--root``) and the store they open, once."""

    __slots__ = ("root", "_store")

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self._store: Any = None

    def store(self):
        if self._store is None:
            from volmerge.runtime.store import Store

            self._store = Store(self.root)
            recover_pending(self._store)
        return self._store


def recover_pending(st) -> None:
    """Every command first finishes or undoes a transaction a crash cut short
    (a cheap query when there is none)."""
    from volmerge.runtime.store import OperationalError

    try:
        row = st.db.execute(
            "SELECT 1 FROM upgrade_journal WHERE state IN ('begun', 'committed') LIMIT 1"
        ).fetchone()
    except OperationalError as exc:
        if "no such table" not in str(exc):
            raise  # a locked or broken database is not "nothing was ever upgraded"
        return
    if row is None:
        return
    from volmerge.context import Context
    from volmerge.upgrade import recover

    recover(Context(st))
