"""Key-level three-way merge of JSON, YAML, TOML and INI.

The operator's change of one key and the new image's change of a
neighbouring key never conflict.  The merge is planned on plain data
(dicts, lists, scalars) and then applied as a few operations to *ours*,
parsed by a round-trip library (ruamel.yaml, tomlkit, configupdater; JSON
keeps its indentation), so the operator's comments, key order, quoting and
indentation survive; keys new in theirs are inserted after their
predecessor, with the comment lines that precede them in theirs.

A key changed on both sides to different values is a conflict reported by
its dotted path.  Lists merge element-wise when all three have the same
length, by concatenation when both sides only appended, otherwise they
conflict.  When a file does not parse on any side the text strategy merges
it and the report says so.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .base import ConflictInfo, FileReport, MergeOptions, MergeResult
from .identity import is_text, trivial_merge
from .text import merge_text


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
MAX_YAML_NODES = 100_000  # at least; more for a big file (see _bound_expansion)
FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
           ".ini": "ini", ".cfg": "ini", ".conf": "ini"}


def format_of(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    return FORMATS.get(name[dot:]) if dot >= 0 else None


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
                plan.conflicts.append((ConflictInfo(dotted(p), what, _j(ov), _j(tv), _j(bv)),
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
    plan.conflicts.append((ConflictInfo(dotted(path), "changed on both sides", _j(o), _j(t), _j(b)),
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


# ---------------------------------------------------------------------------
# formats: parse to (document, plain data); apply ops to ours; dump
# ---------------------------------------------------------------------------
class ParseError(Exception):
    pass


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


class JsonDoc(_TreeDoc):
    def __init__(self, data: bytes) -> None:
        try:
            self.text = data.decode("utf-8")
            self.doc = json.loads(self.text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"JSON does not parse: {exc}") from None
        self.plain = self.doc

    def _apply_at(self, parent: Any, k: Any, op: Op, theirs: Any) -> None:
        if op.kind == "set":
            parent[k] = theirs.get(op.path)
        elif op.kind == "del":
            del parent[k]
        elif op.kind == "add":
            items = list(parent.items())
            pos = _position(list(parent), op)
            items.insert(pos, (k, theirs.get(op.path)))
            parent.clear()
            parent.update(items)

    def dump(self) -> bytes:
        t = self.text
        m = re.search(r"\n([ \t]+)\S", t)
        if m:
            s = json.dumps(self.doc, indent=m.group(1), ensure_ascii=False)
        else:
            sep = (", ", ": ") if re.search(r'":\s', t) or ", " in t else (",", ":")
            s = json.dumps(self.doc, separators=sep, ensure_ascii=False)
        trail = t[len(t.rstrip()):]
        return (s + trail).encode("utf-8")


class YamlDoc(_TreeDoc):
    def __init__(self, data: bytes) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError
        from ruamel.yaml.util import load_yaml_guess_indent

        try:
            self.text = data.decode("utf-8")
            _d, ind, bsi = load_yaml_guess_indent(self.text)
            y = YAML()
            y.preserve_quotes = True
            y.width = 4096
            y.indent(mapping=ind or 2, sequence=(ind or 2) + (bsi or 0), offset=bsi or 0)
            y.explicit_start = self.text.lstrip().startswith("---")
            self.yaml = y
            self.doc = y.load(self.text)
        except (UnicodeDecodeError, YAMLError, ValueError, TypeError) as exc:
            raise ParseError(f"YAML does not parse: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        _bound_expansion(self.doc, max(MAX_YAML_NODES, 2 * len(data)))
        self.plain = _plainify(self.doc)

    def _apply_at(self, parent: Any, k: Any, op: Op, theirs: Any) -> None:
        if op.kind == "set":
            parent[k] = theirs.get(op.path)
        elif op.kind == "del":
            _yaml_delete(parent, k)
        elif op.kind == "add":
            _yaml_insert(parent, k, op.after, op.before, theirs.get(op.path[:-1]))

    def dump(self) -> bytes:
        buf = io.StringIO()
        self.yaml.dump(self.doc, buf)
        return buf.getvalue().encode("utf-8")


def _bound_expansion(doc: Any, limit: int) -> None:
    """ParseError when ``doc`` has more than ``limit`` nodes with its aliases
    expanded.  ruamel.yaml loads an alias as a second reference to the anchored
    node, so a 500-byte "billion laughs" document loads instantly, but every
    walk of the data after it (plainify, the three-way plan, equality) visits
    each reference again: 9**9 nodes.  Counting is iterative and stops at the
    bound, so it costs at most ``limit`` steps (a self-referencing alias too).
    Without aliases a document has fewer nodes than bytes, hence the bound
    relative to the input size."""
    seen = 0
    stack = [doc]
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit:
            raise ParseError(f"YAML expands to more than {limit} nodes through its aliases "
                             "(an alias bomb?)")
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _tail(container: Any, key: Any) -> tuple[Any, Any]:
    """Where ruamel keeps the comment lines that follow ``container[key]``:
    on the deepest last key of its value."""
    from ruamel.yaml.comments import CommentedMap

    v = container[key]
    while isinstance(v, CommentedMap) and len(v):
        container, key = v, list(v)[-1]
        v = container[key]
    return container, key


def _split_token(tok: Any) -> tuple[str, str]:
    if tok is None:
        return "", ""
    val = tok.value
    i = val.find("\n")
    return (val, "") if i < 0 else (val[: i + 1], val[i + 1:])


def _token_of(container: Any, key: Any) -> Any:
    item = container.ca.items.get(key)
    return item[2] if item and len(item) > 2 else None


def _set_token(container: Any, key: Any, value: str) -> None:
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    tok = _token_of(container, key)
    if not value:
        if tok is not None:
            container.ca.items[key][2] = None
        return
    if tok is not None:
        tok.value = value
        return
    item = container.ca.items.setdefault(key, [None, None, None, None])
    while len(item) < 4:
        item.append(None)
    if not value.startswith("\n") and not value.startswith("#"):
        value = "\n" + value
    item[2] = CommentToken(value, CommentMark(0), None)


def _position(keys: list[Any], op: Op) -> int:
    if op.after is not MISSING and op.after in keys:
        return keys.index(op.after) + 1
    if op.before is not MISSING and op.before in keys:
        return keys.index(op.before)
    return len(keys)


def _yaml_insert(parent: Any, key: Any, after: Any, before: Any, tparent: Any) -> None:
    tkeys = list(tparent)
    ti = tkeys.index(key)
    leading = ""
    if ti > 0:
        tc, tk = _tail(tparent, tkeys[ti - 1])
        leading = _split_token(_token_of(tc, tk))[1]
    value = tparent[key]
    vc, vk = _tail(tparent, key)
    v_eol, _v_rest = _split_token(_token_of(vc, vk))
    pos = _position(list(parent), Op("add", [], after=after, before=before))
    if after is not MISSING:
        pc, pk = _tail(parent, after)
        p_eol, p_rest = _split_token(_token_of(pc, pk))
        _set_token(pc, pk, (p_eol or ("\n" if leading else "")) + leading)
    else:
        p_rest = ""
    parent.insert(pos, key, value)
    if vc is tparent:
        vc = parent
        if key in tparent.ca.items:
            parent.ca.items[key] = list(tparent.ca.items[key])
    _set_token(vc, vk, (v_eol or ("\n" if p_rest else "")) + p_rest)


def _yaml_delete(parent: Any, key: Any) -> None:
    keys = list(parent)
    i = keys.index(key)
    _eol, rest = _split_token(_token_of(*_tail(parent, key)))
    if i > 0 and rest:
        pc, pk = _tail(parent, keys[i - 1])
        p_eol, p_rest = _split_token(_token_of(pc, pk))
        _set_token(pc, pk, (p_eol or "\n") + p_rest + rest)
    del parent[key]


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


class TomlDoc(_TreeDoc):
    def __init__(self, data: bytes) -> None:
        import tomlkit
        from tomlkit.exceptions import TOMLKitError

        try:
            self.doc = tomlkit.parse(data.decode("utf-8"))
        except (UnicodeDecodeError, TOMLKitError, ValueError) as exc:
            raise ParseError(f"TOML does not parse: {exc}") from None
        self.plain = _plainify(self.doc.unwrap())

    def _apply_at(self, parent: Any, k: Any, op: Op, theirs: Any) -> None:
        tparent = theirs.get(op.path[:-1])
        if op.kind == "set":
            new = tparent[k]
            old = parent[k]
            tr_old, tr_new = getattr(old, "trivia", None), getattr(new, "trivia", None)
            if tr_old is not None and tr_new is not None and tr_old.comment and not isinstance(op.path[-1], int):
                tr_new.comment_ws, tr_new.comment = tr_old.comment_ws, tr_old.comment
            parent[k] = new
        elif op.kind == "del":
            del parent[k]
        elif op.kind == "add":
            item = tparent.item(k) if hasattr(tparent, "item") else tparent[k]
            lead = "".join(f"# {c}\n" if c else "#\n" for c in _toml_leading(tparent, k))
            tr = getattr(item, "trivia", None)
            if tr is not None and lead:
                tr.indent = ("\n" if _is_table(item) else "") + lead + tr.indent.lstrip("\n")
            cont = parent if hasattr(parent, "_insert_after") else getattr(parent, "value", parent)
            if op.after is not MISSING and not _is_table(item) and hasattr(cont, "_insert_after"):
                cont._insert_after(op.after, k, item)
            else:
                parent.add(k, item)

    def dump(self) -> bytes:
        import tomlkit

        return tomlkit.dumps(self.doc).encode("utf-8")


def _is_table(item: Any) -> bool:
    from tomlkit.items import AoT, Table

    return isinstance(item, (Table, AoT))


def _toml_leading(container: Any, key: Any) -> list[str]:
    """The comment lines right before ``key`` in a tomlkit container."""
    from tomlkit.items import Comment, Table, Whitespace

    body = container.value.body if hasattr(container, "value") and hasattr(container.value, "body") else container.body
    idx = next((i for i, (kk, _v) in enumerate(body) if kk is not None and kk.key == key), -1)
    found: list[str] = []
    j = idx - 1
    while j >= 0 and body[j][0] is None and isinstance(body[j][1], (Comment, Whitespace)):
        if isinstance(body[j][1], Comment):
            found[:0] = [ln.strip().lstrip("#").strip() for ln in body[j][1].as_string().strip().splitlines()]
        j -= 1
    if not found and j >= 0 and isinstance(body[j][1], Table):
        tb = body[j][1].value.body
        m = len(tb) - 1
        while m >= 0 and tb[m][0] is None and isinstance(tb[m][1], (Comment, Whitespace)):
            if isinstance(tb[m][1], Comment):
                found[:0] = [ln.strip().lstrip("#").strip() for ln in tb[m][1].as_string().strip().splitlines()]
            m -= 1
    return found


class IniDoc:
    def __init__(self, data: bytes) -> None:
        from configparser import Error as CPError

        from configupdater import ConfigUpdater

        try:
            self.doc = ConfigUpdater()
            self.doc.read_string(data.decode("utf-8"))
            self.plain = {s: {k: v.value for k, v in self.doc[s].items()} for s in self.doc.sections()}
        except (UnicodeDecodeError, CPError, ValueError) as exc:
            raise ParseError(f"INI does not parse: {str(exc).splitlines()[0]}") from None

    def apply(self, op: Op, theirs: IniDoc) -> None:
        from configupdater import Comment, Space

        p = op.path
        if op.kind == "set" and len(p) == 2:
            self.doc[p[0]][p[1]].value = theirs.doc[p[0]][p[1]].value
        elif op.kind == "del" and len(p) == 2:
            self.doc[p[0]][p[1]].detach()
        elif op.kind == "del" and len(p) == 1:
            self.doc[p[0]].detach()
        elif op.kind == "add" and len(p) == 2:
            tsec = theirs.doc[p[0]]
            lead = _ini_leading(tsec.structure, p[1], Comment)
            value = tsec[p[1]].value
            sec = self.doc[p[0]]
            if op.after is MISSING or op.after not in sec:
                if op.before is not MISSING and op.before in sec:
                    b = sec[op.before].add_before
                else:
                    for c in lead:
                        sec.add_comment(c)
                    sec.set(p[1], value)
                    return
            else:
                b = sec[op.after].add_after
            for c in lead:
                b = b.comment(c)
            b.option(p[1], value)
        elif op.kind == "add" and len(p) == 1:
            tsecs = theirs.doc.sections()
            i = tsecs.index(p[0])
            lead: list[str] = []
            if i > 0:
                prev = theirs.doc[tsecs[i - 1]].structure
                j = len(prev) - 1
                while j >= 0 and isinstance(prev[j], (Comment, Space)):
                    if isinstance(prev[j], Comment):
                        lead = [ln + "\n" for ln in str(prev[j]).splitlines()] + lead
                    j -= 1
            sections = self.doc.sections()
            if sections:
                last = self.doc[sections[-1]]
                if not str(last).endswith("\n\n"):
                    last.add_space("\n")
                for c in lead:
                    last.add_comment(c)
            self.doc.add_section(theirs.doc[p[0]].detach())
        else:
            raise ParseError(f"cannot apply {op.kind} at {dotted(p)} in INI")

    def dump(self) -> bytes:
        return str(self.doc).encode("utf-8")


def _ini_leading(structure: list[Any], key: str, comment_type: type) -> list[str]:
    from configupdater import Option

    idx = next((i for i, b in enumerate(structure) if isinstance(b, Option) and b.key == key), -1)
    out: list[str] = []
    j = idx - 1
    while j >= 0 and isinstance(structure[j], comment_type):
        out = [ln.strip().lstrip("#;").strip() for ln in str(structure[j]).splitlines()] + out
        j -= 1
    return out


DOCS = {"json": JsonDoc, "yaml": YamlDoc, "toml": TomlDoc, "ini": IniDoc}


class StructuredStrategy:
    """Key-level merge of JSON, YAML, TOML and INI, keeping ours' comments and layout."""

    name = "structured"

    def handles(self, path: str, sample: bytes) -> bool:
        return format_of(path) is not None and is_text(sample)

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        done = trivial_merge(self.name, path, base, ours, theirs)
        if done is not None:
            return done
        fmt = opts.options.get("format") or format_of(path)
        if fmt not in DOCS:
            return self._fallback(path, base, ours, theirs, opts, f"unknown format for {path}")
        cls = DOCS[fmt]
        try:
            b = cls(base) if base is not None else None
            o, t = cls(ours), cls(theirs)
        except ParseError as exc:
            return self._fallback(path, base, ours, theirs, opts, str(exc))
        except Exception as exc:  # noqa: BLE001 - a parser's surprise on hostile input
            return self._fallback(path, base, ours, theirs, opts,
                                  f"{fmt.upper()} does not parse: {type(exc).__name__}")
        if not all(isinstance(x.plain, (dict, list)) for x in (o, t)):
            return self._fallback(path, base, ours, theirs, opts, "not a mapping or list at the top")
        plan = plan_merge(b.plain if b is not None else MISSING, o.plain, t.plain)
        conflicts = [c for c, _ops in plan.conflicts]
        ops = list(plan.ops)
        oc = opts.on_conflict
        notes = [] if base is not None else ["no base version: keys in both are merged two-way"]
        action = "merged"
        if conflicts:
            if oc == "fail":
                return MergeResult(None, FileReport(path, "conflict", self.name, conflicts, notes))
            if oc == "keep-both":
                return MergeResult(ours, FileReport(path, "kept-both", self.name, conflicts, notes))
            if oc == "markers":
                r = merge_text(path, base, ours, theirs, opts, self.name)
                r.report.conflicts = conflicts
                r.report.notes = notes + ["conflict markers written by the line merge"]
                r.report.action = "conflict"
                return r
            if oc == "theirs":
                for _c, cops in plan.conflicts:
                    ops.extend(cops)
            notes.append(f"conflicts resolved: {oc}")
        try:
            for op in ops:
                o.apply(op, t)
            out = o.dump()
        except Exception as exc:  # noqa: BLE001 - never lose the file over a round-trip quirk
            return self._fallback(path, base, ours, theirs, opts, f"cannot apply the merge: {exc}")
        changed = [dotted(op.path) for op in ops]
        if changed:
            notes.append("from theirs: " + ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""))
        return MergeResult(out, FileReport(path, action, self.name, conflicts, notes))

    def _fallback(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
                  opts: MergeOptions, why: str) -> MergeResult:
        r = merge_text(path, base, ours, theirs, opts, "text")
        r.report.notes.insert(0, f"fell back to text: {why}")
        return r
