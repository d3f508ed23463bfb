"""Carrying postgresql.conf settings across a major upgrade: the pure parts
(what is carried, how a value is written, how a file is replaced)."""

from __future__ import annotations

import os
import stat

import pytest

from volmerge.strategies.sql.pgconf import conf_value, merge, replace_file


@pytest.mark.unit
def test_merge_carries_what_differs_and_the_new_version_knows():
    old = {"listen_addresses": "*", "work_mem": "4MB", "checkpoint_segments": "8", "ext.level": "2"}
    new = {"listen_addresses": "localhost", "work_mem": "4MB"}
    known = {"listen_addresses", "work_mem"}
    lines, carried, dropped = merge(old, new, known)
    assert carried == ["listen_addresses", "ext.level"]
    assert lines == ["listen_addresses = '*'", "ext.level = '2'"]
    assert dropped == ["checkpoint_segments"]


@pytest.mark.unit
def test_a_value_is_one_quoted_literal_whatever_it_holds():
    assert conf_value("it's") == "'it''s'"
    assert conf_value("a\\b") == "'a\\\\b'"
    assert conf_value("x\ny = 1") == "'x\\ny = 1'"  # no second line for the parser


def test_replace_file_keeps_owner_and_mode_and_leaves_nothing_beside(tmp_path):
    f = tmp_path / "postgresql.conf"
    f.write_text("a = 1\n")
    os.chmod(f, 0o640)
    os.chown(f, 999, 998)
    replace_file(str(f), b"a = 2\n")
    st = f.stat()
    assert f.read_text() == "a = 2\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (999, 998, 0o640)
    assert os.listdir(tmp_path) == ["postgresql.conf"]
