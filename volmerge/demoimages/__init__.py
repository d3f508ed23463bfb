"""The images the demo runs (and the test suite reuses), built offline from
the host's own files and cached by content: busybox, python, PostgreSQL 15
and 16, three versions of the demo's notes app.

``image_archive(kind)`` returns a cached oci-archive (volmerge.demoimages.cache);
the recipes are in ``recipes.py`` and ``demoapp.py``, the host-file gathering
in ``hostfs.py``, the archive writer in ``ociwriter.py``, the demo app itself
in ``app/``.
"""

from __future__ import annotations

from .cache import image_archive
from .kinds import KINDS, REFS, FixtureError

__all__ = ["KINDS", "REFS", "FixtureError", "image_archive"]
