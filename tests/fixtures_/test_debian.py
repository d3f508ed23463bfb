"""Real Debian images built from Debian packages with mmdebstrap
(volmerge/fixtures/debian.py): they load, and run like the official postgres
image (initdb into the empty PGDATA volume as postgres, then the server)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import pytest

from volmerge.fixtures.debian import IMAGES, debian_image, recipe_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def debian_images():  # type: ignore[no-untyped-def]
    if shutil.which("mmdebstrap") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "mmdebstrap is needed (Makefile DEB_PACKAGES)")
    from volmerge.fixtures.images import FixtureError

    try:  # built before the session's network namespace (make test)
        return {kind: debian_image(kind, build=False) for kind in IMAGES}
    except FixtureError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))


def test_recipe_key_changes_with_the_recipe() -> None:
    assert recipe_key("postgres15") != recipe_key("postgres17")
    assert recipe_key("postgres15") == recipe_key("postgres15")


@pytest.mark.timeout(1200)  # the first run on a machine builds both (a few minutes each)
def test_images_are_real_debian_root_file_systems(debian_images) -> None:  # type: ignore[no-untyped-def]
    for kind, path in debian_images.items():
        with tarfile.open(path) as outer:
            index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] \
            == IMAGES[kind].ref
        assert debian_image(kind, build=False) == path  # cached: found, nothing built


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kind,major", [("postgres15", "15"), ("postgres17", "17")])
def test_postgres_image_runs_like_the_official_one(debian_images, cli, own_netns, kind: str,
                                                   major: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("image", "load", str(debian_images[kind]))
    assert r.returncode == 0, r.stderr
    ref = IMAGES[kind].ref
    r = cli("run", "-d", "--name", "pg", "--network", "none", "-e", "POSTGRES_USER=appuser",
            "-e", "POSTGRES_PASSWORD=s3cret", "-e", "POSTGRES_DB=app",
            "-v", "pgdata:/var/lib/postgresql/data", ref)
    assert r.returncode == 0, r.stderr
    try:
        w = cli("wait", "--healthy", "pg", "--timeout", "120", timeout=180)
        assert w.returncode == 0, (w.stderr, cli("logs", "pg").stderr)
        q = cli("exec", "pg", "psql", "-h", "/var/run/postgresql", "-U", "appuser", "-d", "app",
                "-Atc", "SHOW server_version_num; SELECT current_user")
        assert q.returncode == 0, q.stderr
        version, user = q.stdout.split()
        assert version.startswith(major) and user == "appuser"
        # the data directory is the volume's, made by initdb as postgres
        ls = cli("exec", "pg", "sh", "-c", "stat -c '%U %a' $PGDATA; cat $PGDATA/PG_VERSION")
        assert ls.stdout.split() == ["postgres", "700", major], ls.stderr
    finally:
        cli("rm", "-f", "pg")
        cli("volume", "rm", "-f", "pgdata")
