"""`volmerge demo`: the product's story, told and checked step by step.

Until the upgrade transaction lands (issue 8) the story is its first chapter:
build the fixture images from this host's own files (cached), load them into
the store, and check that each can be found by its name.  The demo is a list
of step objects run in order; each step says what it does, does it, and
checks its claim, so later chapters (run v1, upgrade to v2, ...) are appended
as more steps.  A failed step stops the story: ``run_demo`` returns a result
whose ``ok`` is false and the CLI exits 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.store import Store

# The order the images are loaded in: the bases first, then what is built on them.
DEMO_KINDS = ("busybox", "python", "postgres15", "postgres16", "demo-v1", "demo-v2", "demo-v3")


@dataclass
class StepResult:
    title: str
    ok: bool
    skipped: bool = False
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "ok": self.ok, "skipped": self.skipped,
                "detail": self.detail, "seconds": round(self.seconds, 3), **self.data}


@dataclass
class DemoResult:
    steps: list[StepResult]
    images: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [s.to_json() for s in self.steps], "images": self.images}


class Skip(Exception):
    """A step that cannot run on this host and is not needed by the story."""


@dataclass
class Step:
    """One claim of the story: ``run()`` does the work and returns
    ``(detail, data)``; it raises to fail, or ``Skip`` to skip."""

    title: str
    run: Callable[[], tuple[str, dict[str, Any]]]


class DemoContext:
    """What the steps share: the store, the image store, loaded images."""

    def __init__(self, store: Store) -> None:
        from runtime.images import ImageStore

        self.store = store
        self.images = ImageStore(store)
        self.loaded: dict[str, Any] = {}


def _load_step(ctx: DemoContext, kind: str) -> Step:
    def run() -> tuple[str, dict[str, Any]]:
        from fixtures.images import REFS, FixtureError, image_archive

        t0 = time.monotonic()
        try:
            archive = image_archive(kind)
        except FixtureError as exc:
            if kind == "postgres16":
                raise Skip(str(exc)) from None
            raise
        built = time.monotonic() - t0
        t1 = time.monotonic()
        img = ctx.images.load(archive)
        loaded = time.monotonic() - t1
        # The claim: the image is in the store under its name, with all layers.
        found = ctx.images.get(REFS[kind])
        if found.id != img.id:
            raise AssertionError(f"{REFS[kind]} resolves to {found.short_id}, loaded {img.short_id}")
        missing = [l.diff_id for l in found.layers if not l.path.is_dir()]
        if missing:
            raise AssertionError(f"layers not extracted: {', '.join(missing)}")
        ctx.loaded[kind] = found
        n = len(found.layers)
        detail = f"{REFS[kind]}  {n} layer{'s' if n > 1 else ''}  load {loaded:.2f}s"
        return detail, {"kind": kind, "ref": REFS[kind], "id": found.digest,
                        "archive": str(archive), "build_seconds": round(built, 3),
                        "load_seconds": round(loaded, 3)}

    return Step(kind, run)


def demo_steps(ctx: DemoContext, kinds: tuple[str, ...] = DEMO_KINDS) -> list[Step]:
    """The story so far.  The upgrade chapter appends its steps here."""
    return [_load_step(ctx, k) for k in kinds]


def check_kinds(kinds: tuple[str, ...]) -> None:
    """BadInput (exit 2) for a kind that is not a fixture image."""
    from fixtures.images import KINDS

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        from volmerge.errors import BadInput

        raise BadInput(f"unknown demo image {unknown[0]!r} (choose from {', '.join(KINDS)})")


def run_demo(store: Store, kinds: tuple[str, ...] = DEMO_KINDS,
             report: Callable[[StepResult], None] | None = None) -> DemoResult:
    """Run the demo's steps against ``store``; stop at the first failure.

    ``report`` is called after each step (the CLI prints it).
    """
    check_kinds(kinds)
    ctx = DemoContext(store)
    results: list[StepResult] = []
    for step in demo_steps(ctx, kinds):
        t0 = time.monotonic()
        try:
            detail, data = step.run()
            res = StepResult(step.title, True, detail=detail, data=data)
        except Skip as exc:
            res = StepResult(step.title, True, skipped=True, detail=str(exc))
        except Exception as exc:  # the demo reports every failure as a failed claim
            res = StepResult(step.title, False, detail=f"{type(exc).__name__}: {exc}")
        res.seconds = time.monotonic() - t0
        results.append(res)
        if report is not None:
            report(res)
        if not res.ok:
            break
    images = [
        {"id": img.digest, "tags": img.tags, "layers": len(img.layers), "size": img.size,
         "created": img.created}
        for img in ctx.images.list()
    ]
    return DemoResult(results, images)
