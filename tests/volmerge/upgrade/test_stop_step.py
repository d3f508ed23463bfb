"""The upgrade's stop step, undone after the upgrade was killed in the middle
of stopping the old container (found by the random-kill test: a kill that
landed after the stop signal left the app exited once recovery was done)."""

from __future__ import annotations

import subprocess
import sys

from volmerge.runtime.options import RunOptions
from volmerge.runtime.polling import wait_until
from volmerge.runtime.records import pid_alive

BUSYBOX_REF = "localhost/volmerge-fixture/busybox:latest"
# slow to stop: ~1 s between SIGTERM and the exit
SLOW = ["sh", "-c", "trap 'touch /tmp/term; sleep 1; exit 0' TERM; while :; do sleep 0.05; done"]
STOP = ("import sys\nfrom volmerge.runtime.store import Store\nfrom volmerge.context import Context\n"
        "Context(Store(sys.argv[1])).engine.stop(sys.argv[2], timeout=5)\n")


def test_undo_of_a_stop_cut_short_lets_it_finish_then_restarts(root, fixture_image):
    from volmerge.context import Context
    from volmerge.runtime.store import Store
    from volmerge.upgrade.steps import StopContainer

    st = Store(root)
    ctx = Context(st)
    try:
        ctx.images.load(fixture_image("busybox"))
        c = ctx.engine.create(RunOptions(image=BUSYBOX_REF, name="slow", network="none", command=SLOW))
        ctx.engine.start(c.id)
        # the stop as the upgrade begins it; the process killed right after the signal
        proc = subprocess.Popen([sys.executable, "-c", STOP, str(root), c.id])
        term = c.dir / "upper" / "tmp" / "term"  # the container's trap got the signal
        assert wait_until(lambda: ctx.engine.get(c.id).stop_requested and term.exists(),
                          timeout=10)
        proc.kill()
        proc.wait()
        old = ctx.engine.get(c.id)
        assert old.state == "running"  # still in its 1 s shutdown
        StopContainer(id=c.id, name="slow", timeout=5).undo(ctx, {})
        assert ctx.engine.get(c.id).state == "running"
        # the old run has ended (its exit, once the cause of the bug, is behind us)
        assert wait_until(lambda: not pid_alive(old.owner_pid, old.owner_start), timeout=10)
        c = ctx.engine.get(c.id)
        assert c.state == "running" and not c.stop_requested
    finally:
        for x in ctx.engine.list(all=True):
            ctx.engine.remove(x.id, force=True)
        st.close()
