"""The engine's parts that a foreground ``run`` does not use stay unimported:
the log file (a detached supervisor's and ``logs``'), the reconciliation (an
owner found dead) and the network stack (a container network)."""

from __future__ import annotations

import subprocess
import sys

LAZY = ("volmerge.runtime.logfile", "volmerge.runtime.reconcile", "volmerge.runtime.network",
        "selectors", "subprocess")


def test_the_engine_and_the_supervisor_import_none_of_the_lazy_parts():
    code = ("import sys, volmerge.runtime.containers, volmerge.runtime.supervisor;"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "volmerge.runtime.records" in out
    assert [m for m in out if any(m == x or m.startswith(x + ".") for x in LAZY)] == []


def test_the_network_manager_imports_no_reconciliation_and_no_netlink():
    code = ("import sys, volmerge.runtime.network;"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "volmerge.runtime.network.rows" in out
    assert [m for m in out if m in ("volmerge.runtime.network.reconcile",
                                    "volmerge.runtime.network.links") or
            m.startswith("pyroute2")] == []
