"""Merge policies: ordered glob rules choosing a strategy per path.

A policy is a TOML file::

    [[rule]]
    glob = "*.conf"            # no '/': matches the file name at any depth
    strategy = "structured"
    on_conflict = "ours"       # optional, overrides --on-conflict for these paths

    [[rule]]
    glob = "data/**/*.db"      # with '/': matched against the whole relative path
    strategy = "sql"
    options = { keep = true }  # handed to the strategy as MergeOptions.options

    [sql]                      # any other top-level table is kept for the
    rename = { users = "accounts" }   # strategy that reads it (policy.table("sql"))

The first matching rule wins.  Several policies combine in order (the
operator's ``--policy`` before the image's), see :meth:`Policy.combined`.

Every rule carries its origin (``operator:FILE``, ``image:/etc/volmerge/policy.toml``,
``image:label io.volmerge.policy``) so a report can say which policy decided
a path.  A policy shipped by an image is the image author's wish, not the
operator's: :func:`restrict_image_policy` takes out of it what would lower
the operator's safety (allowing data loss, discarding the operator's edits).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput

ON_CONFLICT = ("fail", "ours", "theirs", "markers", "keep-both")
# What an image's policy may not ask for on its own: a strategy is consulted
# only for a file changed on both sides, and a conflict only arises where the
# operator changed something, so these always throw away the operator's edit.
DISCARDING_STRATEGIES = ("theirs",)
DISCARDING_ON_CONFLICT = ("theirs",)
DEFAULT_ORIGIN = "default"
ONLY_OPERATOR = ("only the operator's --policy or --on-conflict theirs can discard the "
                 "operator's edits")


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """gitignore-like globs: ``*`` and ``?`` stay inside one path segment,
    ``**`` spans segments, ``[...]`` is a class; no '/' means 'any depth'."""
    g = glob.strip()
    anchored = "/" in g.rstrip("/")
    g = g.lstrip("/")
    i, out = 0, []
    while i < len(g):
        c = g[i]
        if g.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif g.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = g.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = g[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}$", re.DOTALL)


@dataclass
class Rule:
    glob: str
    strategy: str
    on_conflict: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # origin: "operator:FILE", "image:...", as reported per path
    # what an image asked for and does not get: {"strategy": "theirs", ...};
    # an ignored strategy leaves ``strategy`` empty (detection decides)
    ignored: dict[str, str] = field(default_factory=dict)
    _rx: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def ignored_note(self, key: str) -> str | None:
        """The report note for an ignored request of this rule (None: nothing ignored)."""
        if key not in self.ignored:
            return None
        return (f"{self.source} rule {self.glob!r} asks for {key} {self.ignored[key]!r}; "
                f"ignored: {ONLY_OPERATOR}")

    def matches(self, relpath: str) -> bool:
        if self._rx is None:
            self._rx = glob_to_regex(self.glob)
        return bool(self._rx.match(relpath))


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)  # other top-level tables ([sql] ...)
    source: str = ""
    warnings: list[str] = field(default_factory=list)  # image requests that were ignored

    def rule_for(self, relpath: str) -> Rule | None:
        for r in self.rules:
            if r.matches(relpath):
                return r
        return None

    def table(self, name: str) -> dict[str, Any]:
        t = self.tables.get(name, {})
        return t if isinstance(t, dict) else {}

    @classmethod
    def combined(cls, *policies: Policy | None) -> Policy:
        """Rules of the first policy first; tables merged, earlier wins per key."""
        rules: list[Rule] = []
        tables: dict[str, Any] = {}
        warnings: list[str] = []
        for p in policies:
            if p is None:
                continue
            rules.extend(p.rules)
            warnings.extend(p.warnings)
            for k, v in p.tables.items():
                if isinstance(v, dict) and isinstance(tables.get(k), dict):
                    tables[k] = {**v, **tables[k]}
                else:
                    tables.setdefault(k, v)
        return cls(rules, tables, "+".join(p.source for p in policies if p is not None), warnings)


def parse_policy(text: str, source: str = "<policy>", check_strategies: bool = True,
                 origin: str | None = None) -> Policy:
    """Parse policy TOML; BadInput with a one-line reason when it is unusable.
    ``source`` names the policy in errors, ``origin`` (default: ``source``) in
    the per-path reports."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"policy {source} does not parse: {exc}") from None
    raw_rules = data.pop("rule", [])
    if not isinstance(raw_rules, list):
        raise BadInput(f"policy {source}: 'rule' must be an array of tables ([[rule]])")
    rules = []
    for n, r in enumerate(raw_rules, 1):
        if not isinstance(r, dict):
            raise BadInput(f"policy {source}: rule {n} is not a table")
        unknown = set(r) - {"glob", "strategy", "on_conflict", "options"}
        if unknown:
            raise BadInput(f"policy {source}: rule {n} has unknown key(s) {', '.join(sorted(unknown))}")
        glob, strat = r.get("glob"), r.get("strategy")
        if not isinstance(glob, str) or not glob.strip():
            raise BadInput(f"policy {source}: rule {n} needs a glob string")
        if not isinstance(strat, str) or not strat:
            raise BadInput(f"policy {source}: rule {n} needs a strategy name")
        oc = r.get("on_conflict")
        if oc is not None and oc not in ON_CONFLICT:
            raise BadInput(
                f"policy {source}: rule {n} on_conflict must be one of {', '.join(ON_CONFLICT)}"
            )
        opts = r.get("options", {})
        if not isinstance(opts, dict):
            raise BadInput(f"policy {source}: rule {n} options must be a table")
        if check_strategies:
            from .registry import get_strategy

            try:
                get_strategy(strat)
            except BadInput as exc:
                raise BadInput(f"policy {source}: rule {n}: {exc}") from None
        rules.append(Rule(glob, strat, oc, opts, origin or source))
    return Policy(rules, data, source)


def load_policy(path: str | Path, check_strategies: bool = True,
                origin: str | None = None) -> Policy:
    """The policy in file ``path`` (the operator's ``--policy``: its rules
    report ``operator:PATH`` unless ``origin`` says otherwise)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"policy file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"policy file {p} cannot be read: {exc}") from None
    return parse_policy(text, str(p), check_strategies, origin or f"operator:{p}")


def allow_data_loss_policy(source: str = "--allow-data-loss") -> Policy:
    """The operator's ``--allow-data-loss`` as a policy to combine first: its
    ``[sql] allow_data_loss`` wins over every later policy's."""
    return Policy([], {"sql": {"allow_data_loss": True}}, source)


def restrict_image_policy(policy: Policy, origin: str) -> Policy:
    """Take out of an image's policy what would lower the operator's safety.

    An image may choose strategies for its files, rename columns and give
    defaults, but on its own it may not

    - allow data loss (``[sql] allow_data_loss``, a rule's ``options.allow_data_loss``):
      dropped; the replay refuses losses unless the operator allows them;
    - discard the operator's edits: a rule's ``strategy = "theirs"`` (a strategy
      is only consulted for a file the operator changed too, where the tree
      merge has not already taken theirs) leaves the strategy to detection,
      and ``on_conflict = "theirs"`` falls back to the operator's --on-conflict.

    Every ignored request is listed in ``warnings`` (shown by the preview) and
    the rule keeps it in ``ignored`` for the note on the paths it affects.
    The operator's own ``--policy`` is not restricted and, combined before
    the image's, wins over it.  Modifies and returns ``policy``.
    """
    policy.source = origin
    for r in policy.rules:
        r.source = origin
        if r.strategy in DISCARDING_STRATEGIES:
            r.ignored["strategy"], r.strategy = r.strategy, ""
            policy.warnings.append(
                f"{origin} rule {r.glob!r} asks for strategy {r.ignored['strategy']!r}; "
                f"ignored where the operator changed the file: {ONLY_OPERATOR}")
        if r.on_conflict in DISCARDING_ON_CONFLICT:
            r.ignored["on_conflict"], r.on_conflict = r.on_conflict, None
            policy.warnings.append(f"{r.ignored_note('on_conflict')}")
        if "allow_data_loss" in r.options:
            if r.options.pop("allow_data_loss"):
                policy.warnings.append(
                    f"{origin} rule {r.glob!r} asks for allow_data_loss; ignored: only "
                    "--allow-data-loss or the operator's --policy can allow data loss")
    sql = policy.tables.get("sql")
    if isinstance(sql, dict) and "allow_data_loss" in sql:
        if sql.pop("allow_data_loss"):
            policy.warnings.append(
                f"{origin} asks for allow_data_loss; ignored: only --allow-data-loss or the "
                "operator's --policy can allow data loss")
    if isinstance(sql, dict) and "bookkeeping_tables" in sql:
        # The live rows of a bookkeeping table are replaced by the image's
        # without counting as a loss: an image naming a data table there would
        # drop the operator's rows on its own.  The well-known migration tables
        # (alembic_version, django_migrations, ...) need no declaration.
        names = sql.pop("bookkeeping_tables")
        if names:
            shown = ", ".join(map(str, names)) if isinstance(names, (list, tuple)) else str(names)
            policy.warnings.append(
                f"{origin} declares bookkeeping tables ({shown}); ignored: their live rows "
                "would be replaced by the image's; only the operator's --policy can name them")
    return policy
