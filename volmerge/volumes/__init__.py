"""Volumes as stacks of overlay layers: O(1) snapshot, clone and rollback.

The runtime engine and the upgrade transaction use :class:`VolumeManager`.
"""

from __future__ import annotations

from .hooks import ContainerHooks
from .manager import VolumeManager
from .model import Change, Layer, Snapshot, Volume, check_name

__all__ = ["Change", "ContainerHooks", "Layer", "Snapshot", "Volume", "VolumeManager", "check_name"]
