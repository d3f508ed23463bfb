"""The compose equivalent of ``run --socket-activate``: the service label
``io.volmerge.socket-activate``.  Pure: no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from volmerge.compose.convert import run_options
from volmerge.compose.loader import Options, load
from volmerge.errors import BadInput
from volmerge.runtime.options import PortSpec


def _opts(tmp_path: Path, label: str):  # type: ignore[no-untyped-def]
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  s:\n    image: a\n    labels:\n      io.volmerge.socket-activate: {label}\n")
    return run_options(load(Options(cwd=str(tmp_path)), environ={}), "s")


def test_the_label_asks_for_socket_activation(tmp_path: Path) -> None:
    opts = _opts(tmp_path, '"8080, 127.0.0.1:8443:443"')
    assert opts.socket_activate == [PortSpec(8080, 8080, "tcp", ""),
                                    PortSpec(8443, 443, "tcp", "127.0.0.1")]


def test_a_bad_label_names_the_service(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="services.s.labels.io.volmerge.socket-activate: bad"):
        _opts(tmp_path, '"8080/udp"')
