"""The key-level three-way plan, on plain data (dicts, lists, scalars).

A recursive walk of base, ours and theirs that yields operations to apply
to ours (``set`` / ``add`` / ``del`` / ``append``, each at a path of keys and
indexes) and the conflicts, each with its dotted path (``server.port``,
``plugins[2]``) and the three values.  The formats apply the operations to
ours' round-trip document (structured.py, kvdoc.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .base import ConflictInfo


class ParseError(Exception):
    pass


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def strict_eq(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart and compares order-insensitively
    only mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_eq(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    if a is MISSING or b is MISSING:
        return a is b
    return _scalar_kind(a) == _scalar_kind(b) and a == b


def _scalar_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return type(v).__name__


def dotted(path: list[Any]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            s = str(p)
            out += ("." if out else "") + (s if re.fullmatch(r"[\w-]+", s) else json.dumps(s))
    return out or "(root)"


@dataclass
class Op:
    kind: str  # "set" | "add" | "del" | "append"
    path: list[Any]
    after: Any = None  # for "add": the key in ours it goes after (MISSING: none) ...
    before: Any = None  # ... or else the key in ours it goes before (MISSING: append)
    count: int = 0  # for "append": how many trailing items of theirs


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    conflicts: list[tuple[ConflictInfo, list[Op]]] = field(default_factory=list)  # with theirs' ops


def plan_merge(b: Any, o: Any, t: Any) -> Plan:
    plan = Plan()
    _plan(b, o, t, [], plan)
    return plan


def _plan(b: Any, o: Any, t: Any, path: list[Any], plan: Plan) -> None:
    if strict_eq(o, t):
        return
    if isinstance(o, dict) and isinstance(t, dict) and (b is MISSING or isinstance(b, dict)):
        bb = b if isinstance(b, dict) else {}
        tkeys = list(t)
        for k in list(o) + [k for k in tkeys if k not in o]:
            ov, tv, bv = o.get(k, MISSING), t.get(k, MISSING), bb.get(k, MISSING)
            if strict_eq(ov, tv) or strict_eq(bv, tv):
                continue
            p = path + [k]
            if strict_eq(bv, ov) and not (isinstance(ov, dict) and isinstance(tv, dict)):
                plan.ops.append(_theirs_op(p, ov, tv, tkeys, o))
                continue
            if ov is MISSING or tv is MISSING:
                what = "deleted in ours, changed in theirs" if ov is MISSING else "changed in ours, deleted in theirs"
                plan.conflicts.append((ConflictInfo(dotted(p), _says(what, ov, tv, bv), _j(ov), _j(tv), _j(bv)),
                                       [_theirs_op(p, ov, tv, tkeys, o)]))
                continue
            _plan(bv, ov, tv, p, plan)
        return
    if isinstance(o, list) and isinstance(t, list) and isinstance(b, list):
        n = len(b)
        if len(o) == len(t) == n:
            for i in range(n):
                _plan(b[i], o[i], t[i], path + [i], plan)
            return
        if strict_eq(o[:n], b) and strict_eq(t[:n], b):
            if strict_eq(o[n:], t[n:]):
                return
            plan.ops.append(Op("append", path, count=len(t) - n))
            return
        if strict_eq(b, o):
            plan.ops.append(Op("set", path))
            return
        if strict_eq(b, t):
            return
    elif strict_eq(b, o):
        plan.ops.append(Op("set", path))
        return
    elif strict_eq(b, t):
        return
    plan.conflicts.append((ConflictInfo(dotted(path), _says("changed on both sides", o, t, b),
                                        _j(o), _j(t), _j(b)),
                           [Op("set", path)]))


def _theirs_op(p: list[Any], ov: Any, tv: Any, tkeys: list[Any], o: dict) -> Op:
    if tv is MISSING:
        return Op("del", p)
    if ov is MISSING:
        k = p[-1]
        i = tkeys.index(k)
        after = next((x for x in tkeys[:i][::-1] if x in o), MISSING)
        before = next((x for x in tkeys[i + 1:] if x in o), MISSING)
        return Op("add", p, after=after, before=before)
    return Op("set", p)


def _j(v: Any) -> Any:
    if v is MISSING:
        return None
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


def _says(what: str, o: Any, t: Any, b: Any) -> str:
    """The conflict message an operator can act on: the three values."""
    def show(v: Any) -> str:
        if v is MISSING:
            return "(absent)"
        s = json.dumps(_j(v), ensure_ascii=False, default=str)
        return s if len(s) <= 80 else s[:77] + "..."
    return f"{what}: ours {show(o)}, theirs {show(t)}, base {show(b)}"


class _TreeDoc:
    """What JSON, YAML and TOML documents share: paths into a tree, and the
    ops that are the same on each (append to a list, replace the whole
    document); the rest is ``_apply_at`` on the parent of the path."""

    doc: Any

    def get(self, path: list[Any]) -> Any:
        node = self.doc
        for p in path:
            node = node[p]
        return node

    def apply(self, op: Op, theirs: Any) -> None:
        if op.kind == "append":
            src = theirs.get(op.path)
            dst = self.get(op.path)
            for item in list(src)[len(src) - op.count:]:
                dst.append(item)
            return
        if not op.path:
            self.doc = theirs.doc
            return
        self._apply_at(self.get(op.path[:-1]), op.path[-1], op, theirs)

    def _apply_at(self, parent: Any, k: Any, op: Op, theirs: Any) -> None:
        raise NotImplementedError


def _position(keys: list[Any], op: Op) -> int:
    if op.after is not MISSING and op.after in keys:
        return keys.index(op.after) + 1
    if op.before is not MISSING and op.before in keys:
        return keys.index(op.before)
    return len(keys)


def _plainify(v: Any) -> Any:
    if isinstance(v, dict):
        return {(_plainify(k) if not isinstance(k, (str, int)) else k): _plainify(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plainify(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return v
