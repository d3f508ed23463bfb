"""Key-level three-way merge of JSON, YAML, TOML, INI, .env and .properties.

git's line merge comes first: where it is clean its result is the result,
byte for byte, so a structured merge never loses a comment or a spacing
change that a line merge keeps.  Only where it stops does the key level
decide.  Then the line merge's conflict hunks are merged again finer
(hunks.py: adjacent edits, one side's value change against the other's
respacing); that result is taken when it parses to the same data as the
key-level merge, so both sides' comment and formatting changes arrive.

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

import json
import re
from typing import Any

from .base import ConflictInfo, FileReport, MergeOptions, MergeResult
from .errors import BadInput
from .formats import FORMATS, by_name, detect
from .identity import is_text, trivial_merge
from .kvdoc import EnvDoc, KvParseError, PropertiesDoc
from .plan import (
    MISSING,
    Op,
    ParseError,
    _plainify,
    _position,
    _TreeDoc,
    dotted,
    plan_merge,
    strict_eq,
)
from .text import merge_text
from .yamldoc import MAX_YAML_NODES, YamlDoc

__all__ = ["MAX_YAML_NODES", "MISSING", "StructuredStrategy", "YamlDoc", "format_of", "plan_merge",
           "strict_eq"]


def format_of(path: str) -> str | None:
    """The format a file's name says (content detection: formats.detect)."""
    return by_name(path)


# ---------------------------------------------------------------------------
# formats: parse to (document, plain data); apply ops to ours; dump
# ---------------------------------------------------------------------------
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
            # iter_*: configupdater's doc[name] scans every block (quadratic on big files)
            self.plain = {sec.name: {opt.key: opt.value for opt in sec.iter_options()}
                          for sec in self.doc.iter_sections()}
        except (UnicodeDecodeError, CPError, ValueError) as exc:
            raise ParseError(f"INI does not parse: {str(exc).splitlines()[0]}") from None

    def apply(self, op: Op, theirs: IniDoc) -> None:
        from configupdater import Comment

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
                b = b.comment(c, comment_prefix=c.lstrip()[:1])
            b.option(p[1], value)
        elif op.kind == "add" and len(p) == 1:
            self._add_section(p[0], theirs)
        else:
            raise ParseError(f"cannot apply {op.kind} at {dotted(p)} in INI")

    def _add_section(self, name: str, theirs: IniDoc) -> None:
        """Append theirs' section ``name`` once, with the comment block right
        above its header in theirs.  configupdater keeps the comment lines
        that follow a section's last option in that section, although the
        block right above the next header belongs to that header: the copy
        leaves that block out (it goes with the next section, if added) and
        takes its own from the previous section's end."""
        from configupdater import ConfigUpdater

        tsecs = theirs.doc.sections()
        i = tsecs.index(name)
        lead = _header_block(str(theirs.doc[tsecs[i - 1]])) if i > 0 else []
        body = str(theirs.doc[name]).splitlines(keepends=True)
        own = len(body) - len(_header_block("".join(body))) if i + 1 < len(tsecs) else len(body)
        body = body[:own]
        while len(body) > 1 and not body[-1].strip():
            body.pop()
        copy = ConfigUpdater()
        copy.read_string("".join(body))
        sections = self.doc.sections()
        if not sections:  # nothing to hang the comments on: write the text again
            text = str(self.doc)
            text += "\n" if text and not text.endswith("\n") else ""
            text += "\n" if text and not text.endswith("\n\n") else ""
            fresh = ConfigUpdater()
            fresh.read_string(text + "".join(lead) + "".join(body))
            self.doc = fresh
            return
        last = self.doc[sections[-1]]
        tail = str(last)
        if tail and not tail.endswith("\n"):
            last.add_space("\n")
        if not tail.endswith("\n\n"):
            last.add_space("\n")
        for c in lead:
            last.add_comment(c)
        self.doc.add_section(copy[name].detach())

    def current(self) -> Any:
        """The plain data now (after operations), without writing the text."""
        return {sec.name: {opt.key: opt.value for opt in sec.iter_options()}
                for sec in self.doc.iter_sections()}

    def dump(self) -> bytes:
        return str(self.doc).encode("utf-8")


def _header_block(section_text: str) -> list[str]:
    """The comment lines at the end of a section's text after its last blank
    line: the block that stands right above the next section's header."""
    lines = section_text.splitlines(keepends=True)
    out: list[str] = []
    for ln in reversed(lines):
        if not ln.strip() or ln.lstrip()[:1] not in ("#", ";"):
            break
        out.insert(0, ln)
    return out


def _ini_leading(structure: list[Any], key: str, comment_type: type) -> list[str]:
    from configupdater import Option

    idx = next((i for i, b in enumerate(structure) if isinstance(b, Option) and b.key == key), -1)
    out: list[str] = []
    j = idx - 1
    while j >= 0 and isinstance(structure[j], comment_type):
        out = [ln if ln.endswith("\n") else ln + "\n"
               for ln in str(structure[j]).splitlines(keepends=True)] + out
        j -= 1
    return out


DOCS: dict[str, Any] = {"json": JsonDoc, "yaml": YamlDoc, "toml": TomlDoc, "ini": IniDoc,
                        "env": EnvDoc, "properties": PropertiesDoc}


class StructuredStrategy:
    """Key-level merge of JSON, YAML, TOML, INI, .env and .properties where git's line merge stops."""

    name = "structured"

    def handles(self, path: str, sample: bytes) -> bool:
        return is_text(sample) and detect(path, sample) is not None

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        done = trivial_merge(self.name, path, base, ours, theirs)
        if done is not None:
            return done
        fmt, how = self._format(path, ours, theirs, opts)
        notes = [f"format {fmt.upper()}: by {how}"]
        if base is None:
            notes.append("no base version: keys in both are merged two-way")
        from .xmerge import xmerge

        clean, line_merged = xmerge(base or b"", ours, theirs)
        if clean:  # never parsed: the line merge's result is the result
            return MergeResult(line_merged, FileReport(
                path, "merged", self.name, notes=notes + ["line merge clean: git merge-file's result"]))
        cls = DOCS[fmt]
        try:
            b = cls(base) if base is not None else None
            o, t = cls(ours), cls(theirs)
        except (ParseError, KvParseError) as exc:
            return self._fallback(path, base, ours, theirs, opts, str(exc))
        except Exception as exc:  # noqa: BLE001 - a parser's surprise on hostile input
            return self._fallback(path, base, ours, theirs, opts,
                                  f"{fmt.upper()} does not parse: {type(exc).__name__}")
        if not all(isinstance(x.plain, (dict, list)) for x in (o, t)):
            return self._fallback(path, base, ours, theirs, opts, "not a mapping or list at the top")
        return self._keys(path, base, ours, theirs, opts, cls, (b, o, t), notes)

    def _format(self, path: str, ours: bytes, theirs: bytes, opts: MergeOptions) -> tuple[str, str]:
        """The format and how it was found; BadInput when none (a policy rule
        named this strategy for a file it cannot read)."""
        fmt = opts.options.get("format")
        if fmt is not None:
            if fmt not in DOCS:
                raise BadInput(f"{path}: policy option format = {fmt!r} is not one of "
                               + ", ".join(FORMATS))
            return fmt, "policy option format"
        found = [f for f in (detect(path, ours), detect(path, theirs)) if f is not None]
        for fmt, how in found:  # ours' guess first; a guess both sides parse in
            if len(found) == 1 or found[0][0] == found[1][0] or (
                    _parses(DOCS[fmt], ours) and _parses(DOCS[fmt], theirs)):
                return fmt, how
        if found:
            return found[0]
        raise BadInput(f"{path}: the structured strategy cannot tell this file's format from its "
                       "name or content; say it in the policy rule: options = { format = \"ini\" } "
                       "(" + ", ".join(FORMATS) + ")")

    def _keys(self, path: str, base: bytes | None, ours: bytes, theirs: bytes, opts: MergeOptions,
              cls: Any, docs: tuple[Any, Any, Any], notes: list[str]) -> MergeResult:
        b, o, t = docs
        plan = plan_merge(b.plain if b is not None else MISSING, o.plain, t.plain)
        conflicts = [c for c, _ops in plan.conflicts]
        ops = list(plan.ops)
        oc = opts.on_conflict
        if conflicts:
            if oc == "fail":
                return MergeResult(None, FileReport(path, "conflict", self.name, conflicts, notes))
            if oc == "keep-both":
                name = path.rsplit("/", 1)[-1]
                return MergeResult(ours, FileReport(path, "kept-both", self.name, conflicts, notes + [
                    f"ours kept; the new release's file written beside it as {name}.volmerge-new"]))
            if oc == "markers":
                return self._markers(path, base, ours, theirs, opts, cls, conflicts, notes)
            if oc == "theirs":
                for _c, cops in plan.conflicts:
                    ops.extend(cops)
            notes.append(f"conflicts resolved: {oc}")
        failure = ""
        out: bytes | None = None
        want: Any = None
        try:
            for op in ops:
                o.apply(op, t)
            want = o.current() if callable(getattr(o, "current", None)) else None
            out = o.dump()
            written = cls(out)  # a round-trip writer's slip (ruamel.yaml: `{}` below a comment)
            if want is None:
                want = written.plain
        except Exception as exc:  # noqa: BLE001 - never lose the file over a round-trip quirk
            failure = f"cannot apply the merge: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            out = None
        from .hunks import settle_all

        prefer = oc if oc in ("ours", "theirs") else None
        settled, _left = settle_all(base or b"", ours, theirs, prefer)
        if settled is not None and want is not None and _same_data(cls, settled, want):
            out = settled
            notes.append("line merge's conflicts settled line by line: both sides' comments kept")
        elif out is None:
            return self._fallback(path, base, ours, theirs, opts, failure)
        changed = [dotted(op.path) for op in ops]
        if changed:
            notes.append("from theirs: " + ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""))
        return MergeResult(out, FileReport(path, "merged", self.name, conflicts, notes))

    def _markers(self, path: str, base: bytes | None, ours: bytes, theirs: bytes, opts: MergeOptions,
                 cls: Any, conflicts: list[ConflictInfo], notes: list[str]) -> MergeResult:
        """Markers around just the lines of the conflicting keys (the other
        hunks settled); whether the file still parses is said."""
        from .hunks import settle_all

        fmt = cls.__name__.replace("Doc", "").upper()
        where = ", ".join(c.location for c in conflicts[:10])
        comment = LINE_COMMENT.get(cls.__name__)
        if comment is not None:  # markers as comments, ours' lines active: it still parses
            out, _left = settle_all(base or b"", ours, theirs, markers=True, diff3=opts.diff3,
                                    comment=comment)
            if out is not None and _parses(cls, out):
                notes = notes + [f"conflict markers around the conflicting keys' lines ({where}),"
                                 f" written as {comment.decode()} comments with ours' lines active"
                                 f" and theirs' commented out: the file still parses as {fmt}"]
                return MergeResult(out, FileReport(path, "conflict", self.name, conflicts, notes))
        out, _left = settle_all(base or b"", ours, theirs, markers=True, diff3=opts.diff3)
        if out is None:  # cannot happen with markers=True
            return merge_text(path, base, ours, theirs, opts, self.name)
        notes = notes + [f"conflict markers around the conflicting keys' lines ({where}); "
                         + (f"the file still parses as {fmt}" if _parses(cls, out) else
                            f"the file does not parse as {fmt} until they are resolved"
                            + ("" if comment else f" ({fmt} has no comments to hide them in)"))]
        return MergeResult(out, FileReport(path, "conflict", self.name, conflicts, notes))

    def _fallback(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
                  opts: MergeOptions, why: str) -> MergeResult:
        r = merge_text(path, base, ours, theirs, opts, "text")
        r.report.notes.insert(0, f"fell back to text: {why}")
        return r


# The line comment of each format that has one: conflict markers hide in it.
LINE_COMMENT = {"IniDoc": b"#", "YamlDoc": b"#", "TomlDoc": b"#", "EnvDoc": b"#",
                "PropertiesDoc": b"#"}


def _parses(cls: Any, data: bytes) -> bool:
    try:
        cls(data)
    except Exception:  # noqa: BLE001 - any failure means "does not parse"
        return False
    return True


def _same_data(cls: Any, data: bytes, want: Any) -> bool:
    try:
        return strict_eq(cls(data).plain, want)
    except Exception:  # noqa: BLE001 - does not parse: not the same data
        return False


