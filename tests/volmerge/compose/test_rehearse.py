"""`compose upgrade --rehearse`: the whole stack rehearsed together on a
private network.  The app's health check asks the database (by service name)
for the seed file and compares it with its own: the live pair agrees on
release 1, the rehearsed pair only on release 2, so a rehearsal passes only
when the app's copy talks to the database's copy.  Real containers, the CLI."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("own_netns")

STACK = """
services:
  db:
    image: localhost/app:{db}
    command: [httpd, -f, -p, "80", -h, /data]
    volumes: [dbdata:/data]
    ports: ["18080:80"]
    stop_signal: SIGKILL
    healthcheck: {{test: [CMD, test, -e, /ok], interval: 100ms, retries: 3}}
  web:
    image: localhost/app:{web}
    volumes: [webdata:/data]
    stop_signal: SIGKILL
    healthcheck:
      test: [CMD-SHELL, {check}]
      interval: 100ms
      retries: 5
    depends_on: {{db: {{condition: service_healthy}}}}
volumes: {{dbdata: {{}}, webdata: {{}}}}
"""

# The fixture's busybox is static: its resolver (and wget's service lookup)
# cannot load glibc's NSS in a root without it, so the check reads the name
# from /etc/hosts (the file the network manager keeps, which a resolver's
# "files" source reads) and asks that address with nc.
CHECK = ("ip=$$(awk '{for (i = 2; i <= NF; i++) if ($$i == \"db\") {print $$1; exit}}' /etc/hosts)"
         ' && test -n "$$ip"'
         " && got=$$(printf 'GET /seed.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 1 $$ip 80 | tail -n 1)"
         ' && test "$$got" = "$$(cat /data/seed.txt)"')


@pytest.fixture
def images(store, app_rootfs) -> None:
    """app:1 and app:2; app:1b is release 1's files under another name (its
    seed still says 1)."""
    from volmerge.runtime.images import ImageStore

    images = ImageStore(store)
    cfg = {"Cmd": ["sleep", "1000"], "Volumes": {"/data": {}}}
    for tag, files in (("1", "1"), ("2", "2"), ("1b", "1")):
        images.import_dir(app_rootfs(files, True), tag=f"localhost/app:{tag}", config=cfg)


def _write(d: Path, db: str, web: str) -> Path:
    f = d / "compose.yaml"
    f.write_text(STACK.format(db=db, web=web, check=json.dumps(CHECK)))
    return f


def _live(root: Path) -> dict[str, object]:
    """Everything a rehearsal must leave alone: containers (id, image, state),
    networks, volumes and the database's files."""
    from volmerge.context import make_engine
    from volmerge.runtime.network import NetworkManager
    from volmerge.runtime.store import Store
    from volmerge.volumes import VolumeManager

    st = Store(root, sweep=False)
    try:
        vm = VolumeManager(st)
        with vm.view("st_dbdata") as v:
            data = {p.name: p.read_bytes() for p in sorted(v.iterdir())}
        return {
            "containers": sorted((c.name, c.id, c.image_ref, c.state)
                                 for c in make_engine(st).list(all=True)),
            "networks": sorted(n.name for n in NetworkManager(st).list()),
            "volumes": sorted(x.name for x in vm.list()),
            "db": data,
        }
    finally:
        st.close()


def _published() -> str:
    with urllib.request.urlopen("http://127.0.0.1:18080/seed.txt", timeout=5) as r:
        return r.read().decode()


def test_the_stack_rehearses_together_on_its_own_network(cli, root, images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = _write(tmp_path, "1", "1")
    c = ["compose", "-f", str(f), "-p", "st"]
    assert cli(*c, "up", "-d").returncode == 0
    assert cli(*c, "exec", "db", "sh", "-c", "echo mine > /data/mine").returncode == 0
    before = _live(root)
    assert _published() == "1\n"

    # release 2 of both: the app's copy finds the database's copy by name
    _write(tmp_path, "2", "2")
    p = cli(*c, "upgrade", "--rehearse", "--json", "--health-timeout", "20")
    assert p.returncode == 0, p.stderr
    reps = json.loads(p.stdout)
    assert [(r["service"], r["ok"]) for r in reps] == [("db", True), ("web", True)]
    net = reps[0]["network"]
    assert net.startswith("st_rehearsal-") and reps[1]["network"] == net
    assert "Service db  Rehearsal passed" in p.stderr and "Service web  Rehearsal passed" in p.stderr
    # thrown away: copies, clones, the private network; the live stack untouched
    assert _live(root) == before
    assert _published() == "1\n"
    assert cli("recover").stdout == "Nothing to recover.\n"

    # killed with both copies running: plain `volmerge recover` throws it all away
    p = cli(*c, "upgrade", "--rehearse", "--health-timeout", "20",
            env={"VOLMERGE_FAULT": "stack-rehearsal.before-health#2"})
    assert p.returncode == -9, p.stderr
    assert cli("recover").returncode == 0
    assert _live(root) == before

    # only the app changes, to a release whose seed still says 1: the live
    # database would answer it, but the copy cannot reach the live stack
    _write(tmp_path, "1", "1b")
    p = cli(*c, "upgrade", "--rehearse", "--health-timeout", "5")
    assert p.returncode == 1 and "rehearsal failed at service web" in p.stderr, p.stderr
    assert _live(root) == before

    # the live pair itself is healthy: its app does reach its database
    rows = {r["Service"]: r for r in json.loads(cli(*c, "ps", "--json").stdout)}
    assert rows["web"]["Health"] == "healthy", rows
    assert cli(*c, "down", "-v").returncode == 0
