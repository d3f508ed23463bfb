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

from volmerge.runtime.store import Store

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
        from volmerge.runtime.images import ImageStore

        self.store = store
        self.images = ImageStore(store)
        self.loaded: dict[str, Any] = {}


def _load_step(ctx: DemoContext, kind: str) -> Step:
    def run() -> tuple[str, dict[str, Any]]:
        from volmerge.demoimages import REFS, FixtureError, image_archive

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
        missing = [layer.diff_id for layer in found.layers if not layer.path.is_dir()]
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


STORY_KINDS = ("demo-v1", "demo-v2", "demo-v3")
STACK_KINDS = ("postgres15", "postgres16", "demo-v1", "demo-v2", "demo-v3")
PORT = 18080
V = {1: "localhost/volmerge-demo/notes:1", 2: "localhost/volmerge-demo/notes:2",
     3: "localhost/volmerge-demo/notes:3"}


def _http(path: str, data: bytes | None = None) -> Any:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", data=data, timeout=5) as r:
        return json.loads(r.read())


def _check(cond: bool, claim: str) -> None:
    if not cond:
        raise AssertionError(claim)


class _Client:
    """A user of the app during the upgrade: ``GET /version`` every 5 ms,
    each on a new connection through the published port, until stopped
    (after one answer that came once :meth:`stop` was called); counts what
    it saw.  With ``--socket-activate`` the port stays open across the
    switch, so nothing may be refused: a request only waits."""

    def __init__(self) -> None:
        import threading

        self.answered = self.refused = self.failed = 0
        self.longest = 0.0
        self._deadline = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._deadline = time.monotonic() + 30  # (an app that never answers again)
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import socket

        while True:
            stopping = self._stop.is_set()
            if stopping and time.monotonic() > self._deadline:
                return
            t0 = time.monotonic()
            data = b""
            try:
                with socket.create_connection(("127.0.0.1", PORT), timeout=30) as s:
                    s.sendall(b"GET /version HTTP/1.0\r\nHost: notes\r\n\r\n")
                    while chunk := s.recv(4096):
                        data += chunk
            except ConnectionRefusedError:
                self.refused += 1
            except OSError:
                self.failed += 1
            else:
                if data.split(b" ", 2)[1:2] == [b"200"]:
                    self.answered += 1
                    self.longest = max(self.longest, time.monotonic() - t0)
                    if stopping:
                        return
                else:
                    self.failed += 1
            time.sleep(0.005)


class Story:
    """The upgrade story on the demo notes app, each claim checked."""

    def __init__(self, ctx: DemoContext) -> None:
        from volmerge.context import Context

        self.c = Context(ctx.store)
        self.facts: dict[str, Any] = {}

    def _opts(self, image: str, **kw: Any) -> Any:
        from volmerge.upgrade import UpgradeOptions

        return UpgradeOptions(container="notes", to_image=image, **kw)

    def clean(self) -> tuple[str, dict[str, Any]]:
        """Leftovers of an earlier run of the demo in this store go first."""
        eng, vm = self.c.engine, self.c.volumes
        gone = []
        for cont in eng.list(all=True):
            if cont.name == "notes" or cont.name.startswith("notes."):
                eng.remove(cont.id, force=True)
                gone.append(cont.name)
        for v in ("notes-data", "notes-v2-data"):
            if vm.exists(v):
                vm.remove(v, force=True)
                gone.append(v)
        return ("removed " + ", ".join(gone)) if gone else "nothing left from earlier runs", {}

    def run_v1(self) -> tuple[str, dict[str, Any]]:
        from volmerge.runtime.options import Mount, RunOptions, parse_socket_activate

        eng = self.c.engine
        # the port held open by volmerge and passed in: no client is refused
        # while an upgrade replaces the app (the upgrade step checks it)
        c = eng.create(RunOptions(image=V[1], name="notes", detach=True,
                                  mounts=[Mount("volume", "/data", "notes-data")],
                                  socket_activate=[parse_socket_activate(f"{PORT}:8080")]))
        eng.start(c.id)
        eng.wait(c.id, healthy=True, timeout=30)
        _check(_http("/version")["version"] == 1, "v1 answers on the published port")
        ip = self.c.network.attachment(c.id).ip
        self.facts["ip"] = ip
        return (f"volmerge run -d --name notes --socket-activate {PORT}:8080 -v notes-data:/data "
                f"{V[1]}  ({ip}, healthy)"), {}

    def write(self) -> tuple[str, dict[str, Any]]:
        for text in ("buy milk", "call the plumber", "renew the TLS certificate"):
            _http("/notes", text.encode())
        import os

        from volmerge.runtime.executors.base import Stdio

        null = os.open(os.devnull, os.O_RDWR)
        try:
            code = self.c.engine.exec(
                "notes", ["sh", "-c", "sed -i 's/^greeting = .*/greeting = Hello from the ops team/' "
                          "/data/settings.ini"], stdio=Stdio(null, null, null))
        finally:
            os.close(null)
        _check(code == 0, "the operator's edit ran")
        notes = _http("/notes")["count"]
        greeting = _http("/settings")
        _check(notes == 3, "3 notes stored")
        _check("Hello from the ops team" in str(greeting), "the operator's greeting is live")
        return "3 notes written; operator set greeting = Hello from the ops team in settings.ini", {}

    def preview(self) -> tuple[str, dict[str, Any]]:
        from volmerge.upgrade import preview

        rep = preview(self.c, self._opts(V[2]))
        by = {f["path"]: f for f in rep["files"]}
        _check(rep["summary"]["conflicts"] == 0, "no conflicts")
        _check(by["notes.db"]["strategy"] == "sql" and by["notes.db"]["action"] == "merged",
               "notes.db is replayed into the v2 schema")
        _check(by["settings.ini"]["action"] == "merged", "settings.ini is merged key by key")
        _check(_http("/version")["version"] == 1, "the preview changed nothing")
        lines = [f"{f['action']:<11} {f['path']} [{f['strategy']}]" +
                 (f"  {'; '.join(f.get('notes') or [])}" if f.get("notes") else "")
                 for f in rep["files"] if f["action"] != "unchanged"]
        return "upgrade --dry-run: " + " | ".join(lines), {"preview": rep["summary"]}

    def rehearse(self) -> tuple[str, dict[str, Any]]:
        from volmerge.upgrade import rehearse

        rep = rehearse(self.c, self._opts(V[2], health_timeout=30))
        _check(rep["ok"], "the rehearsal passed its health check")
        _check(_http("/version")["version"] == 1, "v1 kept serving during the rehearsal")
        _check(not [v for v in self.c.volumes.list() if "rehearsal" in v.name], "clones thrown away")
        t = rep["timings"]
        return (f"upgrade --rehearse: clones {t['clone'] * 1000:.0f} ms, merge {t['merge'] * 1000:.0f} ms, "
                f"healthy after {t['health'] * 1000:.0f} ms; clones thrown away, v1 kept serving"), {}

    def upgrade(self) -> tuple[str, dict[str, Any]]:
        from volmerge.upgrade import upgrade

        with _Client() as client:
            rep = upgrade(self.c, self._opts(V[2], health_timeout=30))
        _check(client.refused == 0, "no client refused during the upgrade (socket activation)")
        _check(client.failed == 0, "every request during the upgrade answered")
        _check(_http("/version")["version"] == 2, "v2 answers on the same port")
        notes = _http("/notes")
        _check(notes["count"] == 3, "every note carried into the new schema")
        _check([n["text"] for n in notes["notes"]] ==
               ["buy milk", "call the plumber", "renew the TLS certificate"], "note texts intact")
        st = str(_http("/settings"))
        _check("Hello from the ops team" in st, "the operator's setting kept")
        _check("language" in st and "date_format" in st, "the new settings added")
        _check("'page_size': 50" in st or '"page_size": 50' in st or "50" in st,
               "the changed default (page_size 50) taken")
        c = self.c.engine.get("notes")
        _check(self.c.network.attachment(c.id).ip == self.facts["ip"], "same address")
        t = rep["timings"]
        return (f"upgraded to v2: 3 notes replayed (body -> content, +pinned, +tags), operator's "
                f"greeting kept, new settings added; from the stop to healthy "
                f"{t['downtime'] * 1000:.0f} ms "
                f"(stop {t['stop'] * 1000:.0f}, merge again {t['finish-merge'] * 1000:.0f}, "
                f"start {t['start'] * 1000:.0f}, health {t['health'] * 1000:.0f}; merged "
                f"before the stop in {t['stage-merge'] * 1000:.0f}); a client requesting every "
                f"5 ms meanwhile: {client.answered} answered, 0 refused, the longest waited "
                f"{client.longest * 1000:.0f} ms"), {"timings": t, "client": {
                    "answered": client.answered, "refused": client.refused,
                    "longest_ms": round(client.longest * 1000, 1)}}

    def broken(self) -> tuple[str, dict[str, Any]]:
        from volmerge.errors import NotDone
        from volmerge.upgrade import upgrade

        _http("/notes", b"written on v2")
        try:
            upgrade(self.c, self._opts(V[3], health_timeout=5))
        except NotDone as exc:
            reason = str(exc)
        else:
            raise AssertionError("the broken v3 was committed")
        self.c.engine.wait("notes", healthy=True, timeout=30)
        _check(_http("/version")["version"] == 2, "back on v2")
        _check(_http("/notes")["count"] == 4, "all 4 notes intact")
        return "v3 failed its health check and was rolled back automatically: v2 serves 4 notes", \
            {"reason": reason}

    def rollback(self) -> tuple[str, dict[str, Any]]:
        from volmerge.errors import BadInput
        from volmerge.upgrade import rollback

        try:
            rollback(self.c, "notes")
        except BadInput:
            pass
        else:
            raise AssertionError("a rollback that loses data went ahead without being told")
        rep = rollback(self.c, "notes", keep_new_data_as="notes-v2-data")
        self.c.engine.wait("notes", healthy=True, timeout=30)
        _check(_http("/version")["version"] == 1, "v1 again")
        _check(_http("/notes")["count"] == 3, "v1's 3 notes")
        _check(self.c.volumes.exists("notes-v2-data"), "v2's data kept as a volume")
        rows = rep["new_data"]["notes-data"]["rows"]  # {file: {table: rows}}
        since = ", ".join(f"{n} row{'s' if n != 1 else ''} of {table} in {file}"
                          for file, tables in rows.items() for table, n in tables.items())
        return ("rollback --keep-new-data-as notes-v2-data: back on v1 with its 3 notes; "
                f"data written since the upgrade ({since or 'none'}) kept in volume "
                "notes-v2-data"), {}

    def cleanup(self) -> tuple[str, dict[str, Any]]:
        self.clean()
        return "removed the demo's containers and volumes (images stay in the store)", {}


def story_steps(ctx: DemoContext) -> list[Step]:
    s = Story(ctx)
    return [
        Step("clean", s.clean), Step("run v1", s.run_v1), Step("use it", s.write),
        Step("preview", s.preview), Step("rehearse", s.rehearse), Step("upgrade", s.upgrade),
        Step("try v3", s.broken), Step("rollback", s.rollback), Step("cleanup", s.cleanup),
    ]


def enter_sandbox() -> None:
    """The demo publishes a port and makes a bridge network: it does so in a
    network (and mount) namespace of its own, so the host's network is never
    touched.  Everything it starts is removed before it ends."""
    import subprocess

    from volmerge.runtime import sys as rsys

    rsys.unshare(rsys.CLONE_NEWNET | rsys.CLONE_NEWNS)
    rsys.make_private("/")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def check_kinds(kinds: tuple[str, ...]) -> None:
    """BadInput (exit 2) for a kind that is not a fixture image."""
    from volmerge.demoimages import KINDS

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        from volmerge.errors import BadInput

        raise BadInput(f"unknown demo image {unknown[0]!r} (choose from {', '.join(KINDS)})")


def run_demo(store: Store, kinds: tuple[str, ...] = DEMO_KINDS,
             report: Callable[[StepResult], None] | None = None, *,
             story: bool = False, stack: bool = False) -> DemoResult:
    """Run the demo's steps against ``store``; stop at the first failure.

    ``story``: after loading the images, tell the upgrade story;
    ``stack``: tell it for a compose stack instead (volmerge/demostack.py).
    ``report`` is called after each step (the CLI prints it).
    """
    check_kinds(kinds)
    ctx = DemoContext(store)
    results: list[StepResult] = []
    if stack:
        from volmerge.demostack import stack_steps

        steps = demo_steps(ctx, kinds) + stack_steps(ctx)
    else:
        steps = demo_steps(ctx, kinds) + (story_steps(ctx) if story else [])
    for step in steps:
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
