"""Value classes for the run path, without dataclasses.

A ``@dataclass`` writes its ``__init__``, ``__eq__`` and ``__repr__`` (and,
frozen, ``__setattr__``, ``__delattr__`` and ``__hash__``) as source text
and compiles it in every process that imports the class: 0.2-1.5 ms a
class, ~6 ms for the nine on the path of a cold ``volmerge run --rm``
(measured with the ``dataclasses`` module itself, another ~1 ms, about a
tenth of that command).  The records the run path builds (the options of
``run``, the container record, the image and its layers) are therefore
plain classes: each names its fields in ``__slots__`` and writes its own
``__init__`` (so type checkers see the signature); equality, ``repr``,
:meth:`Value.replace` and :func:`plain` (``dataclasses.asdict``) come from
here, generic over ``__slots__``, compiled once into the ``.pyc``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any, Self


def _key(v: Value) -> tuple[Any, ...]:
    """The fields that equality, hashing and ordering compare, in order."""
    return tuple(getattr(v, f) for f in v._compared)


class Value:
    """Base of a value class: equal when of the same class with equal fields
    (but those named in ``_not_compared``, as ``field(compare=False)``)."""

    __slots__ = ()
    _not_compared: tuple[str, ...] = ()
    #: derived when a subclass is made: its fields (the ``__slots__`` of its
    #: classes, base first) and those of them compared
    _fields: tuple[str, ...] = ()
    _compared: tuple[str, ...] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._fields = tuple(f for k in reversed(cls.__mro__)
                            for f in k.__dict__.get("__slots__", ()))
        cls._compared = tuple(f for f in cls._fields if f not in cls._not_compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)
        return _key(self) == _key(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{self.__class__.__qualname__}({args})"

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (as ``dataclasses.replace``; the other
        fields are shared, not copied).  An unknown field is a TypeError."""
        names = self._fields
        unknown = set(changes) - set(names)
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field "
                            f"{', '.join(sorted(unknown))}")
        new = object.__new__(self.__class__)
        for f in names:
            object.__setattr__(new, f, changes[f] if f in changes else getattr(self, f))
        return new

    def __getstate__(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for f, v in state.items():
            object.__setattr__(self, f, v)


class FrozenValue(Value):
    """A value whose fields cannot be assigned after ``__init__`` (which sets
    them with :meth:`_assign`), as a frozen dataclass: hashable when its
    compared fields are."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]  # Value's is None (mutable)
        return hash(_key(self))

    def _assign(self, values: dict[str, Any]) -> None:
        """Set every field from ``values`` (an ``__init__``'s ``locals()``)."""
        for f in self._fields:
            object.__setattr__(self, f, values[f])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                             f"{self.__class__.__qualname__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen "
                             f"{self.__class__.__qualname__}")


class Ordered:
    """Ordering by the compared fields in order, as ``dataclass(order=True)``;
    mixed into a value class."""

    __slots__ = ()

    def _cmp(self, other: object) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
        if other.__class__ is not self.__class__:
            return None
        assert isinstance(self, Value) and isinstance(other, Value)
        return _key(self), _key(other)

    def __lt__(self, other: object) -> bool:
        k = self._cmp(other)
        return NotImplemented if k is None else k[0] < k[1]

    def __le__(self, other: object) -> bool:
        k = self._cmp(other)
        return NotImplemented if k is None else k[0] <= k[1]

    def __gt__(self, other: object) -> bool:
        k = self._cmp(other)
        return NotImplemented if k is None else k[0] > k[1]

    def __ge__(self, other: object) -> bool:
        k = self._cmp(other)
        return NotImplemented if k is None else k[0] >= k[1]


def plain(v: Any) -> Any:
    """``v`` as JSON-ready data, as ``dataclasses.asdict`` makes it: a value
    becomes a dict of its fields, lists, tuples and dicts are copied with
    their items converted; anything else is returned as it is."""
    if isinstance(v, Value):
        return {f: plain(getattr(v, f)) for f in v._fields}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, tuple):
        return tuple(plain(x) for x in v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def fields(cls: type[Value]) -> tuple[str, ...]:
    """The names of a value class's fields, in order."""
    return cls._fields
