"""A real Debian service whose configuration lives in a volume and changed
between releases: Radicale from Debian's packages, bookworm (3.1) to trixie
(3.5).  The operator edits ``/etc/radicale/config`` in its volume (htpasswd
authentication under comments trixie rewords, more connections, a log
level), keeps a calendar in the data volume, and upgrades: the edits are
kept, trixie's new sections and options are merged in (the extension-less
``config`` is merged as INI, detected by content), and the new server serves
the calendar with the operator's authentication (issue: real workloads in)."""

from __future__ import annotations

import configparser
import json
import os
import shutil

import pytest

from volmerge.fixtures import debian

pytestmark = pytest.mark.slow
OLD, NEW = debian.IMAGES["radicale-bookworm"].ref, debian.IMAGES["radicale-trixie"].ref

# what an operator does to Debian's /etc/radicale/config: switch to htpasswd
# (Debian's default is remote_user), uncomment the file and the encryption
# under comments the next release rewords, raise a limit, a log level with
# a note of their own
EDIT = r"""
p = "/etc/radicale/config"
s = open(p).read()
for a, b in (("type = remote_user", "type = htpasswd"),
             ("#htpasswd_filename = /etc/radicale/users", "htpasswd_filename = /etc/radicale/users"),
             ("#htpasswd_encryption = md5", "htpasswd_encryption = plain"),
             ("#max_connections = 8", "max_connections = 20"),
             ("#level = warning", "# ops: quieter, the disk is small\nlevel = error")):
    assert a in s, a
    s = s.replace(a, b, 1)
open(p, "w").write(s)
open("/etc/radicale/users", "w").write("alice:s3cret\n")
"""

# a CalDAV client in the container (its loopback): METHOD PATH [USER:PASS] < body
HTTP = r"""
import base64, http.client, sys
m, path, cred = sys.argv[1], sys.argv[2], sys.argv[3]
h = {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}
body = sys.stdin.read().encode() or None
if body:
    h["Content-Type"] = "text/calendar; charset=utf-8"
c = http.client.HTTPConnection("127.0.0.1", 5232, timeout=10)
c.request(m, path, body=body, headers=h)
r = c.getresponse()
sys.stdout.write(str(r.status) + "\n" + r.read().decode())
"""

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//volmerge test//EN
BEGIN:VEVENT
UID:upgrade-day@volmerge.test
DTSTAMP:20260101T000000Z
DTSTART:20260301T090000Z
DTEND:20260301T100000Z
SUMMARY:Upgrade day
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n")


@pytest.fixture(scope="module")
def images():  # type: ignore[no-untyped-def]
    if shutil.which("mmdebstrap") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("mmdebstrap is needed")
    from volmerge.fixtures.images import FixtureError

    try:  # built before the session's network namespace (make test)
        return [debian.debian_image(k, build=False) for k in ("radicale-bookworm",
                                                              "radicale-trixie")]
    except FixtureError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))


def _http(cli, method: str, path: str, cred: str = "alice:s3cret",  # type: ignore[no-untyped-def]
          body: str = "") -> tuple[int, str]:
    p = cli("exec", "-i", "rad", "python3", "-c", HTTP, method, path, cred, input=body)
    assert p.returncode == 0, p.stderr
    status, _nl, text = p.stdout.partition("\n")
    return int(status), text


def _config(cli) -> configparser.ConfigParser:  # type: ignore[no-untyped-def]
    p = cli("exec", "rad", "cat", "/etc/radicale/config")
    assert p.returncode == 0, p.stderr
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(p.stdout)
    return cp


def _healthy(cli) -> None:  # type: ignore[no-untyped-def]
    w = cli("wait", "--healthy", "rad", "--timeout", "60", timeout=90)
    assert w.returncode == 0, (w.stderr, cli("logs", "rad").stderr)


@pytest.mark.timeout(600)
def test_radicale_bookworm_to_trixie_keeps_the_operators_config(cli, images,
                                                                 own_netns) -> None:  # type: ignore[no-untyped-def]
    for path in images:
        r = cli("image", "load", str(path), timeout=300)
        assert r.returncode == 0, r.stderr
    r = cli("run", "-d", "--name", "rad", "--network", "none", "-v", "radconf:/etc/radicale",
            "-v", "raddata:/var/lib/radicale", OLD)
    assert r.returncode == 0, r.stderr
    try:
        _healthy(cli)
        p = cli("exec", "rad", "python3", "-c", EDIT)
        assert p.returncode == 0, p.stderr
        assert cli("restart", "rad").returncode == 0
        _healthy(cli)
        assert _http(cli, "MKCALENDAR", "/alice/work/")[0] == 201
        assert _http(cli, "PUT", "/alice/work/upgrade-day.ics", body=EVENT)[0] == 201
        assert _http(cli, "GET", "/alice/work/upgrade-day.ics", cred="alice:wrong")[0] == 401

        # trixie's config drops the active `type = remote_user` (its default
        # became denyall) where the operator changed it: the one conflict,
        # which the dry run shows and the operator settles for their side
        r = cli("upgrade", "rad", "--to", NEW, "--dry-run", "--json", timeout=300)
        assert "changed in ours, deleted in theirs" in r.stdout + r.stderr, (r.stdout, r.stderr)
        r = cli("upgrade", "rad", "--to", NEW, "--on-conflict", "ours", "--json", timeout=300)
        assert r.returncode == 0, (r.stdout, r.stderr)
        report = json.loads(r.stdout)
        (merged,) = report["volumes"]["radconf"]["files"]
        assert merged["path"] == "config" and merged["action"] == "merged", merged
        assert "format INI: by content" in merged["notes"], merged
        assert [c["location"] for c in merged["conflicts"]] == ["auth.type"], merged
        _healthy(cli)
        p = cli("exec", "rad", "python3", "-c", "import radicale; print(radicale.VERSION)")
        assert p.stdout.startswith("3.5"), p.stdout      # trixie's server runs

        cfg = _config(cli)
        # the operator's edits
        assert cfg["auth"]["type"] == "htpasswd"
        assert cfg["auth"]["htpasswd_filename"] == "/etc/radicale/users"
        assert cfg["auth"]["htpasswd_encryption"] == "plain"
        assert cfg["server"]["max_connections"] == "20"
        assert cfg["logging"]["level"] == "error"
        text = cli("exec", "rad", "cat", "/etc/radicale/config").stdout
        assert "# ops: quieter, the disk is small" in text
        # trixie's changes: new sections, new (commented) options and
        # reworded comments where the operator changed nothing
        assert cfg.has_section("hook") and cfg.has_section("reporting")
        assert "#protocol = (default)" in text
        assert "#use_mtime_and_size_for_item_cache = False" in text
        assert "# Command that is run after changes to storage, default is emtpy" in text
        # the calendar, served with the operator's authentication
        status, body = _http(cli, "GET", "/alice/work/upgrade-day.ics")
        assert status == 200 and "SUMMARY:Upgrade day" in body, (status, body)
        assert _http(cli, "GET", "/alice/work/upgrade-day.ics", cred="alice:wrong")[0] == 401
    finally:
        for cid in cli("ps", "-aq").stdout.split():
            cli("rm", "-f", cid)
