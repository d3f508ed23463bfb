"""Issue 16 on real-looking configuration files: a structured merge never
loses what git's line merge keeps, formats found by content, .env and
.properties, comments above a new INI section written once, policy errors,
conflicts an operator can act on.  The files are written here from the
formats' documentation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from volmerge.strategies.base import MergeOptions
from volmerge.strategies.errors import BadInput
from volmerge.strategies.formats import detect
from volmerge.strategies.structured import IniDoc, StructuredStrategy

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

S = StructuredStrategy()


def git_merge(tmp: Path, base: bytes, ours: bytes, theirs: bytes) -> tuple[int, bytes]:
    for n, c in (("base", base), ("ours", ours), ("theirs", theirs)):
        (tmp / n).write_bytes(c)
    p = subprocess.run(["git", "merge-file", "-p", "-L", "ours", "-L", "base", "-L", "theirs",
                        str(tmp / "ours"), str(tmp / "base"), str(tmp / "theirs")],
                       capture_output=True, check=False)
    return p.returncode, p.stdout


def merge(path: str, base: str | None, ours: str, theirs: str, oc: str = "fail", **options):  # type: ignore[no-untyped-def]
    return S.merge(path, base.encode() if base is not None else None, ours.encode(), theirs.encode(),
                   MergeOptions(on_conflict=oc, options=options))  # type: ignore[arg-type]


SUPERVISOR_BASE = """\
; process control daemon configuration

[unix_http_server]
file=/run/procd.sock   ; the path to the socket file
chmod=0700             ; socket file mode (default 0700)

[procd]
logfile=/var/log/procd/procd.log ; main log file
pidfile=/run/procd.pid           ; pidfile
childlogdir=/var/log/procd       ; where child log files go

[rpcinterface:procd]
procd.rpcinterface_factory = procd.rpcinterface:make_main_rpcinterface

[procctl]
serverurl=unix:///run/procd.sock ; use a unix:// URL for a unix socket

[include]
files = /etc/procd/conf.d/*.conf
"""


def test_supervisor_style_conf_keeps_the_clean_line_merge(tmp_path: Path) -> None:
    """The operator changed values, the new release added comment paragraphs
    and a key: git merges it cleanly, and that is the result, byte for byte
    (the INI merge used to drop the comments and write `silent = false`)."""
    ours = SUPERVISOR_BASE.replace("chmod=0700 ", "chmod=0770 ").replace(
        "/var/log/procd/procd.log", "/srv/log/procd.log")
    theirs = SUPERVISOR_BASE.replace(
        "[procd]\n", "; The [procd] section holds the daemon's own settings.\n"
        "; Paths may use %(here)s for the directory of this file.\n\n[procd]\n").replace(
        "childlogdir=/var/log/procd       ; where child log files go\n",
        "childlogdir=/var/log/procd       ; where child log files go\n"
        "; silent: do not log to stdout in the foreground\nsilent=false\n").replace(
        "[include]\n", "; Files to include (globs, relative to this file)\n[include]\n")
    rc, expected = git_merge(tmp_path, SUPERVISOR_BASE.encode(), ours.encode(), theirs.encode())
    assert rc == 0
    r = merge("etc/procd/procd.conf", SUPERVISOR_BASE, ours, theirs)
    assert r.report.action == "merged" and r.report.strategy == "structured"
    assert r.content == expected
    text = r.content.decode()
    assert "silent=false\n" in text and "; Paths may use %(here)s" in text and "chmod=0770" in text


CAL_BASE = """\
# -*- mode: conf -*-

# Configuration of the calendar server.
# Put it in /etc/calsrv/config (everyone) or ~/.config/calsrv/config (one user).

[server]

# Addresses to listen on, separated by a comma
#hosts = localhost:5232

# Maximum number of parallel connections
#max_connections = 8

# Maximum size of a request body (bytes)
#max_content_length = 100000000

[auth]

# Authentication method
# Value: none | htpasswd | remote_user
#type = none

# Password file for htpasswd
#htpasswd_filename = /etc/calsrv/users
"""


def test_radicale_style_config_by_content(tmp_path: Path) -> None:
    """No extension, INI inside.  The operator uncommented keys right below
    comment lines that the new release reworded: four line conflicts for git,
    none for the key merge, and every comment of the new release arrives."""
    ours = (CAL_BASE.replace("#hosts = localhost:5232", "hosts = 0.0.0.0:5232")
            .replace("#max_connections = 8", "max_connections = 20")
            .replace("#type = none", "type = htpasswd")
            .replace("#htpasswd_filename = /etc/calsrv/users", "htpasswd_filename = /srv/cal/users"))
    theirs = (CAL_BASE.replace("# Addresses to listen on, separated by a comma",
                               "# Comma-separated list of addresses to listen on (IPv4 or [IPv6]:port)")
              .replace("# Maximum number of parallel connections",
                       "# Maximum number of parallel connections (0: no limit)")
              .replace("# Value: none | htpasswd | remote_user",
                       "# Value: none | denyall | htpasswd | remote_user | http_x_remote_user")
              .replace("# Password file for htpasswd", "# Password file for the htpasswd method")
              + "\n# Delay after a failed login (seconds)\n#delay = 1\n")
    rc, _ = git_merge(tmp_path, CAL_BASE.encode(), ours.encode(), theirs.encode())
    assert rc >= 2  # git stops on every reworded comment above an uncommented key
    assert S.handles("etc/calsrv/config", ours.encode()) and detect("etc/calsrv/config", ours.encode()) == ("ini", "content")
    r = merge("etc/calsrv/config", CAL_BASE, ours, theirs)
    assert r.report.action == "merged" and not r.report.conflicts
    assert "format INI: by content" in r.report.notes
    want = (theirs.replace("#hosts = localhost:5232", "hosts = 0.0.0.0:5232")
            .replace("#max_connections = 8", "max_connections = 20")
            .replace("#type = none", "type = htpasswd")
            .replace("#htpasswd_filename = /etc/calsrv/users", "htpasswd_filename = /srv/cal/users"))
    assert r.content.decode() == want


def test_both_changed_neighbouring_keys_and_spacing() -> None:
    """git stops on neighbouring lines; the operator's value change and the
    release's respacing of the same key settle, and the release's new
    comment and key arrive with their spelling."""
    base = "[db]\nhost = db.local\nport = 5432\nuser = app\n"
    ours = "[db]\nhost = db.internal\nport = 5432\nuser = app\n"
    theirs = "[db]\nhost=db.local\n# TCP port\nport=5433\nuser = app\n"
    r = merge("app.cnf", base, ours, theirs)
    assert r.report.action == "merged" and not r.report.conflicts
    assert r.content.decode() == "[db]\nhost = db.internal\n# TCP port\nport=5433\nuser = app\n"


def test_new_sections_carry_their_comment_block_once() -> None:
    """Issue 16 point 6: three new sections, each with the comment block right
    above its header in the new release, written once each."""
    base = "[server]\nport = 80\n"
    ours = "[server]\nport = 8080\n# operator's note about server\n"
    theirs = ("[server]\nport = 80\n# trailing note of server\n\n"
              "# Storage backend\n[storage]\ntype = fs\n# trailing note of storage\n\n"
              "# Web interface\n[web]\ntype = internal\n\n"
              "# Logging\n[logging]\nlevel = info\n")
    o, t = IniDoc(ours.encode()), IniDoc(theirs.encode())
    from volmerge.strategies.plan import plan_merge

    plan = plan_merge(IniDoc(base.encode()).plain, o.plain, t.plain)
    for op in plan.ops:
        o.apply(op, t)
    out = o.dump().decode()
    for c in ("# Storage backend", "# Web interface", "# Logging", "# trailing note of storage"):
        assert out.count(c) == 1, (c, out)
    assert "# trailing note of server" not in out
    assert out.index("# Storage backend\n[storage]") < out.index("# Web interface\n[web]") \
        < out.index("# Logging\n[logging]")
    assert IniDoc(out.encode()).plain == {"server": {"port": "8080"}, "storage": {"type": "fs"},
                                          "web": {"type": "internal"}, "logging": {"level": "info"}}


ENV_BASE = """\
# Defaults for the metrics agent (sourced by the service unit)

# Interface to listen on
LISTEN=127.0.0.1:9100

# Extra options passed to the daemon
OPTS="--log.level=info"
"""


def test_etc_default_and_env_files() -> None:
    ours = ENV_BASE.replace("LISTEN=127.0.0.1:9100", "LISTEN=0.0.0.0:9100")
    theirs = (ENV_BASE.replace("# Interface to listen on", "# Address and port to listen on")
              .replace('OPTS="--log.level=info"', 'OPTS="--log.level=warn"')
              + "\n# Collectors to turn off\nexport DISABLED=\"wifi,nfs\"\n")
    assert detect("etc/default/metrics-agent", ours.encode()) == ("env", "content")
    for path in ("etc/default/metrics-agent", "srv/app/.env"):
        r = merge(path, ENV_BASE, ours, theirs)
        assert r.report.action == "merged" and not r.report.conflicts, r.report
        assert r.content.decode() == theirs.replace("LISTEN=127.0.0.1:9100", "LISTEN=0.0.0.0:9100")


def test_env_key_level_when_lines_conflict() -> None:
    base = "A=1\nB=2\n"
    r = merge("x.env", base, "A=1\nB=2\nC=3\n", "A=1\nB=2\n# new in the release\nD=4\n")
    assert r.report.action == "merged"
    assert r.content.decode() == "A=1\nB=2\nC=3\n# new in the release\nD=4\n"
    r = merge("x.env", base, "A=5\nB=2\n", "A=6\nB=2\n")
    assert r.content is None and r.report.conflicts[0].location == "A"
    assert r.report.conflicts[0].message == 'changed on both sides: ours "5", theirs "6", base "1"'


PROPS_BASE = """\
# Application settings
! the bang is a comment too
server.port=8080
server.address = 0.0.0.0
greeting : Hello, \\
    world
logging.level.root=INFO
"""


def test_java_properties() -> None:
    ours = PROPS_BASE.replace("server.port=8080", "server.port=9090")
    theirs = PROPS_BASE.replace("server.address = 0.0.0.0", "# bind address\nserver.address = ::")
    r = merge("app/application.properties", PROPS_BASE, ours, theirs)
    assert r.report.action == "merged" and not r.report.conflicts
    assert r.content.decode() == theirs.replace("server.port=8080", "server.port=9090")
    r = merge("application.properties", PROPS_BASE, ours + "a=1\n", ours + "b=2\n")
    assert r.report.action == "merged" and r.content.decode().endswith("a=1\nb=2\n")
    from volmerge.strategies.kvdoc import PropertiesDoc

    assert PropertiesDoc(PROPS_BASE.encode()).plain["greeting"] == "Hello, \\\n    world"


def test_policy_structured_on_unreadable_file_is_an_error() -> None:
    """Issue 16 point 6: a rule naming `structured` for a file of no known
    format is bad input, not a silent line merge; `format` says it."""
    base, ours, theirs = "a b c\n1 2\n", "a b c\n1 3\n", "a b d\n1 2\n"
    with pytest.raises(BadInput, match="format"):
        merge("etc/weird", base, ours, theirs)
    with pytest.raises(BadInput, match="not one of"):
        merge("etc/weird", base, ours, theirs, format="xml")
    r = merge("etc/weird", "x = 1\ny = 2\n", "x = 5\ny = 2\n", "x = 1\ny = 2\nz = 3\n", format="env")
    assert r.report.action == "merged" and "format ENV: by policy option format" in r.report.notes


def test_conflict_names_key_values_and_resolutions(tmp_path: Path) -> None:
    base = "[log]\nlevel = info\nfile = /var/log/app.log\n"
    ours = "[log]\nlevel = warn\nfile = /var/log/app.log\n"
    theirs = "[log]\nlevel = debug\nfile = /var/log/app.log\n"
    r = merge("app.ini", base, ours, theirs)
    (c,) = r.report.conflicts
    assert (c.location, c.ours, c.theirs, c.base) == ("log.level", "warn", "debug", "info")
    assert c.message == 'changed on both sides: ours "warn", theirs "debug", base "info"'
    r = merge("app.ini", base, ours, theirs, "keep-both")
    assert r.report.action == "kept-both" and r.content == ours.encode()
    assert any("app.ini.volmerge-new" in n for n in r.report.notes)
    r = merge("app.ini", base, ours, theirs, "markers")
    assert r.report.action == "conflict"
    # markers as comments, ours' line active, theirs' commented out: it still parses
    assert r.content.decode() == ("[log]\n# <<<<<<< ours\nlevel = warn\n# =======\n"
                                  "# level = debug\n# >>>>>>> theirs\nfile = /var/log/app.log\n")
    assert any("the file still parses as INI" in n for n in r.report.notes)


@pytest.mark.parametrize("name,base,ours,theirs,active,inert", [
    ("app.yaml", "log:\n  level: info\n", "log:\n  level: warn\n", "log:\n  level: debug\n",
     "  level: warn\n", "#   level: debug\n"),
    ("app.toml", "[log]\nlevel = 'info'\n", "[log]\nlevel = 'warn'\n",
     "[log]\nlevel = 'debug'\n", "level = 'warn'\n", "# level = 'debug'\n"),
    ("app.env", "LEVEL=info\n", "LEVEL=warn\n", "LEVEL=debug\n", "LEVEL=warn\n",
     "# LEVEL=debug\n"),
    ("app.properties", "level=info\n", "level=warn\n", "level=debug\n", "level=warn\n",
     "# level=debug\n"),
])
def test_markers_stay_parseable_where_the_format_has_comments(name, base, ours, theirs, active,
                                                               inert) -> None:
    r = merge(name, base, ours, theirs, "markers")
    text = r.content.decode()
    assert r.report.action == "conflict" and "# <<<<<<< ours\n" in text, text
    assert active in text and inert in text and "# >>>>>>> theirs\n" in text
    assert any("the file still parses" in n for n in r.report.notes), r.report.notes


def test_json_markers_say_the_file_cannot_parse() -> None:
    r = merge("app.json", '{\n  "level": "info"\n}\n', '{\n  "level": "warn"\n}\n',
              '{\n  "level": "debug"\n}\n', "markers")
    assert r.report.action == "conflict" and "<<<<<<< ours\n" in r.content.decode()
    assert any("does not parse as JSON" in n and "no comments" in n for n in r.report.notes)


def test_cli_policy_error_and_keep_both_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through `volmerge merge`: a rule naming `structured` for a file of no
    known format stops with one line on stderr, exit 2, nothing written; a
    structured conflict with keep-both writes NAME.volmerge-new and says so;
    the dry run says how the format was found."""
    from .treeutil import read, three

    b, o, t = three(tmp_path, {"weird": b"a b c\n1 2\n", "config": CAL_BASE.encode()},
                    {"weird": b"a b c\n1 3\n",
                     "config": CAL_BASE.replace("#hosts = localhost:5232", "hosts = ::1:5232").encode()},
                    {"weird": b"a b d\n1 2\n",
                     "config": CAL_BASE.replace("# Addresses to listen on", "# Listen on").encode()})
    pol = tmp_path / "pol.toml"
    pol.write_text('[[rule]]\nglob = "weird"\nstrategy = "structured"\n')
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--policy", str(pol))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "format" in p.stderr
    assert not (tmp_path / "out").exists()
    pol.write_text('[[rule]]\nglob = "weird"\nstrategy = "structured"\noptions = { format = "env" }\n')
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--policy", str(pol),
            "--dry-run")
    assert p.returncode == 1 and "fell back to text: env file has a line that is not key=value" in p.stdout
    p = cli("merge", str(b), str(o), str(t), "-o", str(tmp_path / "out"), "--on-conflict", "keep-both")
    assert p.returncode == 0, p.stderr
    assert "format INI: by content" in p.stdout
    # and why a file got the line merge: no format by name or content
    assert "text: detected (no structured format by name or content)" in p.stdout
    got = read(tmp_path / "out")
    assert got["config"] == CAL_BASE.replace("#hosts = localhost:5232", "hosts = ::1:5232").replace(
        "# Addresses to listen on", "# Listen on").encode()
    assert got["weird"] == b"a b c\n1 3\n" and got["weird.volmerge-new"] == b"a b d\n1 2\n"


@pytest.mark.parametrize("path, content, want", [
    ("etc/app/config", b'{\n  "listen": 80\n}\n', ("json", "content")),
    ("etc/app/app.cfg", b'title = "x"\n[owner]\nname = "ops"\n', ("toml", "content")),
    ("etc/app/my.cnf", b"[mysqld]\nport = 3306\nbind-address = 127.0.0.1\n", ("ini", "content")),
    ("etc/default/grub", b'# boot menu\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=""\n', ("env", "content")),
    ("srv/app.conf", b"server:\n  port: 80\nlog: info\n", ("yaml", "content")),
    ("x/values.yml", b"a: 1\n", ("yaml", "extension")),
    ("x/.env.production", b"A=1\n", ("env", "extension")),
    ("x/messages.properties", b"a=1\n", ("properties", "extension")),
    # an all-commented INI file is not TOML (empty tables), it is INI
    ("etc/calsrv/config", CAL_BASE.encode(), ("ini", "content")),
    # not a format: the line merge alone
    ("etc/nginx/nginx.conf", b"events {\n    worker_connections 768;\n}\n", None),
    ("etc/motd.conf", b"Welcome: be nice.\n", None),
    ("src/main.c", b"int x = 1;\n", None),
])
def test_format_detection(path: str, content: bytes, want: tuple[str, str] | None) -> None:
    assert detect(path, content) == want
    assert S.handles(path, content) == (want is not None)


def test_a_sample_cut_mid_file_is_detected_on_its_complete_lines() -> None:
    big = ("[main]\n" + "".join(f"key{i} = {i}\n" for i in range(2000))).encode()
    assert len(big) > 8192 and detect("etc/app.conf", big[:8192]) == ("ini", "content")


def test_json_last_key_changed_while_the_release_appends_one() -> None:
    """Ours changes the last key of an object, theirs appends a key after it
    (adding a comma to that line): the value from ours, the comma and the
    new key's spelling from theirs."""
    base = '{\n  "listen": "127.0.0.1",\n  "workers": 2\n}\n'
    ours = '{\n  "listen": "127.0.0.1",\n  "workers": 8\n}\n'
    theirs = '{\n  "listen": "127.0.0.1",\n  "workers": 2,\n  "tls": {"cert": "/etc/ssl/a.pem"}\n}\n'
    r = merge("app.json", base, ours, theirs)
    assert r.report.action == "merged"
    assert r.content.decode() == ('{\n  "listen": "127.0.0.1",\n  "workers": 8,\n'
                                  '  "tls": {"cert": "/etc/ssl/a.pem"}\n}\n')


def test_ini_key_added_at_a_section_end_keeps_its_comment_a_comment() -> None:
    """Found by the differential test: a key from theirs appended at the end
    of a section arrived with its comment line stripped of its `#` (which
    no longer parsed)."""
    r = merge("a.ini", "[sec0]\nkey00 = on\nkey01 = on\n\n", "[sec0]\nkey00 = on\no0 = on\nkey01 = on\n\n",
              "[sec0]\n# t note 0\nt1 = on\n\n")
    assert r.report.action == "merged"
    assert IniDoc(r.content).plain == {"sec0": {"o0": "on", "t1": "on"}}
    assert b"# t note 0\nt1 = on\n" in r.content
