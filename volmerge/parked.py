"""The names an upgrade parks a container's earlier generations under
(``NAME.genN``: the container an upgrade replaced, kept stopped for a
rollback), in one place for those who make them (volmerge/upgrade) and
those who leave them out (``compose ps``, ``volume rm``).  A leaf: importing
it does not import the upgrade package."""

from __future__ import annotations


def parked_name(name: str, gen: int) -> str:
    """The name generation ``gen`` of the container ``name`` is parked under."""
    return f"{name}.gen{gen}"


def is_parked(container_name: str, of: str | None = None) -> bool:
    """Whether ``container_name`` is a parked generation's (:func:`parked_name`),
    of container ``of`` when given."""
    head, sep, gen = container_name.rpartition(".gen")
    return bool(sep) and gen.isdigit() and (of is None or head == of)
