"""The operator's configuration across a PostgreSQL major upgrade.

``pg_hba.conf`` and ``pg_ident.conf`` are copied verbatim.  The settings of
``postgresql.conf`` and ``postgresql.auto.conf`` are read from the servers
themselves (``pg_file_settings``: what each file sets, as the server parsed
it — quoting, escapes, ``include`` directives and duplicate lines already
resolved), not by a parser of our own: each old file's settings that differ
from the new file's, and that the new version knows (``pg_settings``;
extension settings, with a dot, always), are appended to the new file.
What comes from another file (an ``include``) or is unknown is reported,
not carried.  Files are replaced atomically: written beside, synced,
renamed over, the directory synced.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

SETTINGS_FILES = ("postgresql.conf", "postgresql.auto.conf")
VERBATIM = ("pg_hba.conf", "pg_ident.conf")


@dataclass(frozen=True)
class ServerConf:
    """What one server read from its configuration files."""

    files: dict[str, dict[str, str]]                   # file name in the data directory -> settings
    elsewhere: list[str] = field(default_factory=list)  # names set by files outside it (includes)


def read_conf(conn: Any, datadir: str) -> ServerConf:
    """The settings each configuration file of ``datadir`` sets (the last
    line of a name wins), read on a superuser connection.  Rows with an
    error count too: a temporary server runs with its own socket and
    listen addresses on the command line, so the file's values of those
    are "cannot be changed without restarting" to it — and are exactly
    what the operator set."""
    files: dict[str, dict[str, str]] = {}
    elsewhere: list[str] = []
    top = os.path.abspath(datadir)
    for source, name, value in conn.execute(
            "SELECT sourcefile, name, setting FROM pg_file_settings "
            "WHERE name IS NOT NULL ORDER BY seqno").fetchall():
        name = name.lower()
        base = os.path.basename(source or "")
        if os.path.dirname(source or "") == top and base in SETTINGS_FILES:
            files.setdefault(base, {})[name] = value if value is not None else ""
        elif name not in elsewhere:
            elsewhere.append(name)
    return ServerConf(files, elsewhere)


def known_settings(conn: Any) -> set[str]:
    return {r[0].lower() for r in conn.execute("SELECT name FROM pg_settings").fetchall()}


@dataclass
class Carried:
    carried: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def note(self) -> str:
        text = ("configuration carried: pg_hba.conf, pg_ident.conf, settings "
                f"{', '.join(self.carried) or 'none'}")
        if self.dropped:
            text += f"; not carried (unknown to the new version or set elsewhere): {', '.join(self.dropped)}"
        return text


def conf_value(value: str) -> str:
    """A value as a postgresql.conf literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n") + "'"


def merge(old: dict[str, str], new: dict[str, str], known: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Lines to append to the new file, names carried, names dropped."""
    lines, carried, dropped = [], [], []
    for name, value in old.items():
        if name not in known and "." not in name:
            dropped.append(name)
        elif new.get(name) != value:
            carried.append(name)
            lines.append(f"{name} = {conf_value(value)}")
    return lines, carried, dropped


def carry(old_data: str, new_data: str, old: ServerConf, new: ServerConf, known: set[str],
          old_major: str) -> Carried:
    """Write the old configuration into ``new_data`` (both servers' views
    were read while they ran: ``old``, ``new``)."""
    out = Carried(dropped=list(old.elsewhere))
    for name in VERBATIM:
        src, dst = os.path.join(old_data, name), os.path.join(new_data, name)
        if os.path.isfile(src) and os.path.isfile(dst):
            with open(src, "rb") as f:
                replace_file(dst, f.read())
    for name in SETTINGS_FILES:
        dst = os.path.join(new_data, name)
        lines, c, d = merge(old.files.get(name, {}), new.files.get(name, {}), known)
        out.carried += c
        out.dropped += [x for x in d if x not in out.dropped]
        if lines and os.path.isfile(dst):
            with open(dst, "rb") as f:
                text = f.read().rstrip(b"\n")
            text += (f"\n\n# Carried from the PostgreSQL {old_major} data directory by volmerge "
                     "(pg-major upgrade)\n" + "\n".join(lines) + "\n").encode()
            replace_file(dst, text)
    return out


def replace_file(path: str, data: bytes) -> None:
    """Replace ``path`` keeping its owner and mode: written beside it,
    fsynced, renamed over, the directory fsynced."""
    from volmerge.runtime.atomicfile import AtomicFile

    st = os.stat(path, follow_symlinks=False)
    with AtomicFile(path, stat.S_IMODE(st.st_mode)) as f:
        f.write(data)
        os.fchown(f.fd, st.st_uid, st.st_gid)
