"""The strategy protocol (architecture.md, principle 7).

A strategy is a pure function from (base, ours, theirs) to a merged result
plus a report.  Content strategies merge one file's bytes; the tree merge
(strategies.tree, strategies.walk) walks three directory trees and dispatches each path that
changed on both sides to the content strategy the policy picks.

Built-in strategies register through the entry-point group
``volmerge.strategies`` exactly as a third-party package would::

    [project.entry-points."volmerge.strategies"]
    text = "volmerge.strategies.text:TextStrategy"

The entry point names a class (or factory) taking no arguments whose instances
satisfy :class:`Strategy`.

Two optional attributes steer how the tree merge uses a strategy:

* ``detect_rank`` (int): the strategy takes part in *detection* (a path no
  policy rule names goes to the first strategy, lowest rank first, whose
  ``handles`` accepts both sides).  The built-ins rank sql 10, structured 20,
  text 30, binary 90 (DEFAULT_RANKS); a plugin without a rank is used only
  where a policy rule names it.
* ``pick`` ("ours", "theirs" or None): a *whole-file* strategy, decided from
  file identity alone, so the content is never read (None: a conflict when
  both sides changed).  See :func:`whole_file_pick`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Action = Literal[
    "unchanged", "kept-ours", "took-theirs", "merged", "added", "deleted", "conflict", "kept-both"
]
ACTIONS: tuple[str, ...] = (
    "unchanged", "kept-ours", "took-theirs", "merged", "added", "deleted", "conflict", "kept-both",
)
OnConflict = Literal["fail", "ours", "theirs", "markers", "keep-both"]
Pick = Literal["ours", "theirs"] | None
# detection ranks of the built-in strategies, for an instance without ``detect_rank``
DEFAULT_RANKS: dict[str, int] = {"sql": 10, "structured": 20, "text": 30, "binary": 90}


@dataclass
class ConflictInfo:
    """Where a conflict is: ``location`` is a line range ("lines 3-5") for text,
    a dotted key path ("server.port") for structured data, a table/column for SQL."""

    location: str
    message: str
    ours: Any = None
    theirs: Any = None
    base: Any = None


@dataclass
class FileReport:
    path: str  # relative to the tree root, '/'-separated (non-UTF-8 bytes as surrogateescape)
    action: Action
    strategy: str
    conflicts: list[ConflictInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "fell back to text: YAML does not parse"
    # which policy decided the path: the origin of the rule consulted
    # ("operator:FILE", "image:/etc/volmerge/policy.toml") or "default" (no rule)
    policy: str = "default"
    rule: str | None = None  # that rule's glob
    overridden: list[str] = field(default_factory=list)  # image requests ignored here

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = self.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return d


@dataclass
class MergeResult:
    """The merged content of one file.  ``content`` is None when the merge
    decided the file must not exist (deleted) or when a conflict left no
    result (and on_conflict was ``fail``)."""

    content: bytes | None
    report: FileReport


@dataclass
class MergeOptions:
    on_conflict: OnConflict = "fail"
    diff3: bool = False  # markers with the base section (|||||||)
    options: dict[str, Any] = field(default_factory=dict)  # per-rule options from the policy


@runtime_checkable
class Strategy(Protocol):
    """A content strategy.  ``name`` is its registry name."""

    name: str

    def handles(self, path: str, sample: bytes) -> bool:
        """Whether this strategy can merge ``path`` whose first bytes are
        ``sample`` (used by detection when no policy rule names a strategy)."""
        ...

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        """Merge three versions of one file.  ``base`` is None when the file
        did not exist in base (added on both sides)."""
        ...


@runtime_checkable
class FileStrategy(Protocol):
    """A strategy that works on files rather than bytes in memory (databases,
    large binary formats).  When a strategy has ``merge_files`` the tree merge
    calls it instead of ``merge``: ``base`` may be None (no base version);
    ``out`` does not exist yet and must be written complete (or not at all)."""

    name: str

    def handles(self, path: str, sample: bytes) -> bool: ...

    def merge_files(self, path: str, base: str | None, ours: str, theirs: str, out: str,
                    opts: MergeOptions) -> FileReport: ...


def detect_rank(strategy: Any) -> int | None:
    """Where ``strategy`` comes in detection (lower first); None: not at all."""
    rank = getattr(strategy, "detect_rank", None)
    if isinstance(rank, int) and not isinstance(rank, bool):
        return rank
    return DEFAULT_RANKS.get(getattr(strategy, "name", ""))


def detection_order(strategies: dict[str, Any]) -> list[Any]:
    """The strategies (name -> instance) that take part in detection, in the
    order detection tries them (rank, then name)."""
    ranked = [(r, n, s) for n, s in strategies.items() if (r := detect_rank(s)) is not None]
    return [s for _r, _n, s in sorted(ranked, key=lambda x: (x[0], x[1]))]


def whole_file_pick(strategy: Any) -> tuple[bool, Pick]:
    """(whether ``strategy`` decides whole files by identity, which side it
    picks when both changed: "ours", "theirs" or None for a conflict)."""
    if not hasattr(strategy, "pick"):
        return False, None
    pick = strategy.pick
    if pick not in ("ours", "theirs", None):
        return False, None  # not the whole-file attribute: an unrelated ``pick``
    return True, pick
