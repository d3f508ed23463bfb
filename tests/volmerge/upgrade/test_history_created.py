"""``history``: the first generation's time is when its container was
created, not the time of the upgrade that recorded it (both generations
showed the same minute)."""

from __future__ import annotations

import json

IMG = "localhost/volmerge-fixture/busybox:latest"


def test_first_generation_created_when_its_container_was(cli, fixture_image) -> None:  # type: ignore[no-untyped-def]
    assert cli("image", "load", str(fixture_image("busybox"))).returncode == 0
    assert cli("image", "tag", IMG, "localhost/bb:2").returncode == 0
    assert cli("run", "-d", "--network", "none", "--name", "app", IMG,
               "sleep", "300").returncode == 0
    try:
        [c] = json.loads(cli("inspect", "--json", "app").stdout)
        p = cli("upgrade", "app", "--to", "localhost/bb:2", "--stop-timeout", "0",
                "--health-timeout", "0.2")
        assert p.returncode == 0, p.stderr
        gens = [g for g in json.loads(cli("history", "app", "--json").stdout)
                if g["type"] == "generation"]
        assert [g["generation"] for g in gens] == [1, 2]
        assert gens[0]["created"] == c["created"]
        assert gens[1]["created"] > c["created"]
    finally:
        cli("rm", "-f", "app", "app.gen1")
