"""Issue 16 point 5: YAML anchors, aliases and several documents."""

from __future__ import annotations

import pytest

from volmerge.strategies.base import MergeOptions
from volmerge.strategies.structured import StructuredStrategy

pytestmark = pytest.mark.unit  # no root: runs as any user (tests/test_unit_unprivileged.py)

S = StructuredStrategy()


def merge(base: str, ours: str, theirs: str, oc: str = "fail"):  # type: ignore[no-untyped-def]
    return S.merge("app.yaml", base.encode(), ours.encode(), theirs.encode(),
                   MergeOptions(on_conflict=oc))  # type: ignore[arg-type]


def test_recursive_anchor_on_an_untouched_key_is_written_back() -> None:
    """`a: &x [1, *x]` loads as [1, None] in ruamel.yaml and used to be
    written back as `a: [1, null]`."""
    base = "a: &x [1, *x]\nb: 1\n"
    r = merge(base, "a: &x [1, *x]\nb: 2\nc: 1\n", "a: &x [1, *x]\nb: 1\nd: 1\n")
    assert r.report.action == "merged" and r.content == b"a: &x [1, *x]\nb: 2\nc: 1\nd: 1\n"
    # both sides added keys at the same place with a real conflict elsewhere:
    # never written by ruamel.yaml, so never `null`
    r = merge(base, "a: &x [1, *x]\nb: 2\n", "a: &x [1, *x]\nb: 3\n", "theirs")
    assert b"null" not in r.content and b"&x [1, *x]" in r.content


def test_anchors_and_aliases_survive_a_key_level_merge() -> None:
    base = ("defaults: &defaults\n  adapter: postgres\n  host: localhost\n\n"
            "development:\n  <<: *defaults\n  database: dev\n\nports: &p [80, 443]\nweb: *p\nx: 1\n")
    ours = base.replace("x: 1", "x: 1\nfrom_ours: 1")
    theirs = base.replace("x: 1", "x: 1\nfrom_theirs: 2")
    r = merge(base, ours, theirs)
    assert r.report.action == "merged"
    text = r.content.decode()
    assert "defaults: &defaults\n" in text and "<<: *defaults" in text
    assert "ports: &p [80, 443]" in text and "web: *p" in text
    assert "from_ours: 1" in text and "from_theirs: 2" in text


MANIFESTS = """\
---
# the application
kind: Deployment
spec:
  replicas: 1
  image: app:1
---
# its service
kind: Service
spec:
  port: 80
"""


def test_several_documents_merge_document_by_document() -> None:
    ours = MANIFESTS.replace("replicas: 1", "replicas: 3  # operator")
    theirs = MANIFESTS.replace("image: app:1", "image: app:2\n  pull: always").replace(
        "port: 80", "port: 8080")
    r = merge(MANIFESTS, ours, theirs)
    assert r.report.action == "merged" and not r.report.conflicts
    assert r.content.decode() == ours.replace("image: app:1", "image: app:2\n  pull: always").replace(
        "port: 80", "port: 8080")
    r = merge(MANIFESTS, MANIFESTS.replace("port: 80", "port: 81"), MANIFESTS.replace("port: 80", "port: 82"))
    assert r.content is None and r.report.conflicts[0].location == "[1].spec.port"
    # the key-level path writes every document back
    o = MANIFESTS.replace("kind: Service", "kind: Service\nmine: 1")
    t = MANIFESTS.replace("kind: Service", "kind: Service\ntheirs: 2")
    r = merge(MANIFESTS, o, t)
    assert r.report.action == "merged" and r.content.decode().count("---") == 2
    assert "# the application" in r.content.decode() and "theirs: 2" in r.content.decode()


def test_a_key_level_result_that_does_not_parse_back_is_never_written() -> None:
    """Found by the differential test: both sides deleted the two keys of a
    mapping below a comment; ruamel.yaml wrote `{}` at column 0 under the
    comment, which is not YAML.  The merge says so and leaves the file to
    the line merge instead."""
    base = "sec0:\n  key00:  on\nsec1:\n  # listen address\n  key10:  on\n  key11:  on\n"
    r = merge(base, base.replace("  key10:  on\n", ""), base.replace("  key11:  on\n", ""))
    assert r.content is None or b"\n{}" not in r.content
    assert r.report.action == "conflict" and "fell back to text: cannot apply the merge" in r.report.notes[0]
