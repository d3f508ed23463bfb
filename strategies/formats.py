"""Which structured format a file is in: by its name, else by its content.

``.json .yaml .yml .toml .ini .env .properties`` say what they are.  Names
that say nothing — ``config``, ``*.conf``, ``*.cnf``, ``*.cfg``, files under
``etc/default/``, a file without an extension — are parsed: JSON, INI,
TOML, ``KEY=value`` lines (the ``.env`` / ``/etc/default`` form, tried
first under ``etc/default/``) and YAML, in that order, on the complete
lines of the first 8 KiB.  A guess is safe: the structured strategy keeps
git's line merge wherever it is clean, and where it stops takes the finer
line merge only when it parses to the key-level merge's data.
"""

from __future__ import annotations

import json
import re

EXTENSIONS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".ini": "ini",
              ".env": "env", ".properties": "properties"}
SNIFF_EXTENSIONS = (".conf", ".cnf", ".cfg", ".config", ".rc")
FORMATS = ("json", "yaml", "toml", "ini", "env", "properties")
_ENV_LINE = re.compile(rb"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.]*=")


def by_name(path: str) -> str | None:
    """The format the name says, or None."""
    name = path.rsplit("/", 1)[-1].lower()
    if name == ".env" or name.startswith(".env."):
        return "env"
    dot = name.rfind(".")
    return EXTENSIONS.get(name[dot:]) if dot > 0 else None


def _under_etc_default(path: str) -> bool:
    p = path.lstrip("/")
    return p.startswith("etc/default/") or "/etc/default/" in p


def says_nothing(path: str) -> bool:
    """Whether the content decides: no extension, or one that many formats use."""
    name = path.rsplit("/", 1)[-1].lower()
    if _under_etc_default(path):
        return True
    return "." not in name.lstrip(".") or name.endswith(SNIFF_EXTENSIONS)


def detect(path: str, sample: bytes) -> tuple[str, str] | None:
    """(format, how it was found: "extension" or "content") or None."""
    fmt = by_name(path)
    if fmt is not None:
        return fmt, "extension"
    if says_nothing(path):
        fmt = sniff(sample, shell=_under_etc_default(path))
        if fmt is not None:
            return fmt, "content"
    return None


def sniff(sample: bytes, shell: bool = False) -> str | None:
    """The format the content parses as, or None.  ``sample`` may be cut
    short (the first 8 KiB): only its complete lines are parsed.  INI comes
    before TOML (``[section]`` and ``key = 1`` lines are both; a name that
    says nothing is more often INI), ``KEY=value`` first when ``shell``
    (files under /etc/default are sourced by shell scripts)."""
    if b"\0" in sample:
        return None
    if len(sample) >= 8192:
        sample = sample[:8192]
        cut = sample.rfind(b"\n")
        sample = sample[: cut + 1] if cut >= 0 else b""
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return None
    order = [("json", _json), ("ini", _ini), ("toml", _toml), ("env", _env), ("yaml", _yaml)]
    if shell:
        order.insert(0, order.pop(3))
    for fmt, check in order:
        try:
            if check(text):
                return fmt
        except Exception:  # noqa: BLE001,S112 - any parser error just means "not this format"
            continue
    return None


def _json(text: str) -> bool:
    s = text.lstrip()
    return s[:1] in ("{", "[") and isinstance(json.loads(text), (dict, list))


def _toml(text: str) -> bool:
    """TOML with at least one value outside a table header (an INI file whose
    keys are all commented out parses as TOML tables with nothing in them)."""
    import tomllib

    def has_value(d: dict) -> bool:
        return any(not isinstance(v, dict) or has_value(v) for v in d.values())

    return has_value(tomllib.loads(text))


def _ini(text: str) -> bool:
    from configparser import RawConfigParser

    cp = RawConfigParser(strict=False, interpolation=None)
    cp.read_string(text)
    return bool(cp.sections())


def _env(text: str) -> bool:
    lines = [ln for ln in text.encode().splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")]
    return bool(lines) and all(_ENV_LINE.match(ln) for ln in lines)


def _yaml(text: str) -> bool:
    from ruamel.yaml import YAML

    if "*" in text and "&" in text:
        return False  # aliases: leave to the bounded parse of the merge itself
    data = YAML(typ="safe", pure=True).load(text)
    return isinstance(data, dict) and (len(data) >= 2 or any(isinstance(v, (dict, list))
                                                            for v in data.values()))
