"""Helpers for the fixture-image tests: skopeo and a throw-away podman store
(tests/podman.py)."""

from __future__ import annotations

from tests.podman import podman, skopeo_config, skopeo_inspect

__all__ = ["podman", "skopeo_config", "skopeo_inspect"]
