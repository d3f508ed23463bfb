"""Modules registered in ``sys.modules`` without running them, until first used.

``dataclasses`` imports ``inspect`` (with ast, dis, tokenize, linecache: ~5 ms
of a cold ``volmerge run``, a tenth of it) for one call: the signature it
writes into the ``__doc__`` of a dataclass that has no docstring.  A process
that calls :func:`defer("inspect") <defer>` before its first dataclass gets,
for ``import inspect``, the module object with its spec but not yet executed;
the first attribute read of it (``inspect.signature``, ``from inspect import
x``) executes it, once, and from then on it is the ordinary module.  So
everything that uses inspect (typer, a docstring-less dataclass) still works;
only a process that never does saves its import.
"""

from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any


def defer(name: str) -> None:
    """Register the top-level, non-package module ``name`` unexecuted (see above);
    nothing when it is imported already or cannot be found."""
    if name in sys.modules:
        return
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is not None:
        return
    module = importlib.util.module_from_spec(spec)
    lock = threading.Lock()

    def __getattr__(attr: str) -> Any:
        # only names the module has not defined yet: __spec__, __name__... are there
        with lock:
            if module.__dict__.get("__getattr__") is __getattr__:
                del module.__dict__["__getattr__"]
                try:
                    spec.loader.exec_module(module)  # type: ignore[union-attr]
                except BaseException:
                    del sys.modules[name]  # as a failed import: the next one tries again
                    raise
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
