"""``run --rm`` removes the volume made for an image VOLUME nobody mounted, as
Docker's --rm removes anonymous volumes; named volumes and the automatic
volumes of other containers stay."""

from __future__ import annotations

from .conftest import APP


def _volumes(vm) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(vm("volume", "ls", "-q").stdout.split())


def test_run_rm_removes_its_anonymous_volume_only(vm) -> None:  # type: ignore[no-untyped-def]
    assert _volumes(vm) == []
    r = vm("run", "--rm", "--network", "none", APP[1], "cat", "/data/static.txt")
    assert r.returncode == 0 and r.stdout == "static v1\n", r.stderr
    assert _volumes(vm) == []  # the image's /data volume went with the container

    # a named volume given with -v stays
    vm("run", "--rm", "--network", "none", "-v", "keep:/data", APP[1], "true", check=True)
    assert _volumes(vm) == ["keep"]

    # a container without --rm keeps its automatic volume, after rm too
    vm("run", "--name", "kept", "--network", "none", APP[1], "true", check=True)
    vm("rm", "kept", check=True)
    assert _volumes(vm) == ["keep", "kept_data"]

    # an automatic volume that existed before (same name) is not the --rm run's
    vm("run", "--rm", "--name", "kept", "--network", "none", APP[1], "true", check=True)
    assert _volumes(vm) == ["keep", "kept_data"]
