"""YAML documents for the structured merge (ruamel.yaml round trip).

Comments, quoting, indentation, anchors and aliases of ours survive the
operations; aliases are bounded (an alias bomb is refused before any walk
of the data); a file of several documents merges document by document (the
plan sees a list of documents: ``[1].server.port`` is in the second); a
document with a recursive anchor (``a: &x [1, *x]``), which ruamel.yaml
loads as ``[1, None]`` and would write back so, is never written by
ruamel.yaml: its merge is the line merge's, settled hunk by hunk where the
data allows, else the text strategy's.
"""

from __future__ import annotations

import io
from typing import Any

from .plan import MISSING, Op, ParseError, _plainify, _position, _TreeDoc

MAX_YAML_NODES = 100_000  # at least; more for a big file (see _bound_expansion)


class YamlDoc(_TreeDoc):
    def __init__(self, data: bytes) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError
        from ruamel.yaml.util import load_yaml_guess_indent

        try:
            self.text = data.decode("utf-8")
            try:
                _d, ind, bsi = load_yaml_guess_indent(self.text)
            except YAMLError:  # several documents: the first one's indentation
                first = self.text.split("\n---", 1)[0]
                _d, ind, bsi = load_yaml_guess_indent(first) if first.strip() else (None, 2, 0)
            y = YAML()
            y.preserve_quotes = True
            y.width = 4096
            y.indent(mapping=ind or 2, sequence=(ind or 2) + (bsi or 0), offset=bsi or 0)
            y.explicit_start = self.text.lstrip().startswith("---")
            self.yaml = y
            docs = list(y.load_all(self.text))
            self.multi = len(docs) > 1
            self.doc = docs if self.multi else (docs[0] if docs else None)
        except (UnicodeDecodeError, YAMLError, ValueError, TypeError) as exc:
            raise ParseError(f"YAML does not parse: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        _bound_expansion(self.doc, max(MAX_YAML_NODES, 2 * len(data)))
        self.recursive = "&" in self.text and "*" in self.text and _recursive_anchor(y, self.text)
        self.plain = _plainify(self.doc)

    def apply(self, op: Op, theirs: Any) -> None:
        super().apply(op, theirs)
        if not op.path:
            self.multi = theirs.multi

    def _apply_at(self, parent: Any, k: Any, op: Op, theirs: Any) -> None:
        if op.kind == "set":
            parent[k] = theirs.get(op.path)
        elif op.kind == "del":
            _yaml_delete(parent, k)
        elif op.kind == "add":
            _yaml_insert(parent, k, op.after, op.before, theirs.get(op.path[:-1]))

    def current(self) -> Any:
        """The plain data now (after operations), without writing the text."""
        return _plainify(self.doc)

    def dump(self) -> bytes:
        if self.recursive:
            raise ParseError("YAML has a recursive anchor (an alias inside its own anchor), "
                             "which ruamel.yaml would write back as null")
        buf = io.StringIO()
        if self.multi and isinstance(self.doc, list):
            self.yaml.dump_all(self.doc, buf)
        else:
            self.yaml.dump(self.doc, buf)
        return buf.getvalue().encode("utf-8")


def _recursive_anchor(y: Any, text: str) -> bool:
    """Whether an alias stands inside the node it refers to.  Walks the
    composed node graph (aliases are shared nodes there, never expanded), each
    node once, with an explicit stack."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    for root in y.compose_all(text):
        if root is None:
            continue
        on_path: set[int] = set()
        done: set[int] = set()
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                on_path.discard(id(node))
                done.add(id(node))
                continue
            if id(node) in on_path:
                return True
            if id(node) in done:
                continue
            on_path.add(id(node))
            stack.append((node, True))
            if isinstance(node, SequenceNode):
                stack.extend((c, False) for c in node.value)
            elif isinstance(node, MappingNode):
                for k, v in node.value:
                    stack.extend(((k, False), (v, False)))
    return False


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
