"""Hostile and corrupt input: one-line error, exit 2, nothing partial in the
store, nothing written outside the root.  One test per case (issue 2, item 5)."""

from __future__ import annotations

import gzip
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from .builders import E, compress, image_files, layer_tar, sha, write_dir, write_tar
from .conftest import store_is_empty


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store that hostile entries aim at."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("original")
    return d


def _refused(cli, root: Path, outside: Path, src: Path, *words: str) -> str:
    before = sorted(os.listdir(outside))
    r = cli("image", "load", str(src))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volmerge: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert r.stdout == ""
    store_is_empty(root)
    assert sorted(os.listdir(outside)) == before
    assert (outside / "victim").read_text() == "original"
    return lines[0]


def _archive(tmp_path: Path, layers: list[bytes], **kw) -> Path:  # type: ignore[no-untyped-def]
    return write_tar(image_files(layers, **kw), tmp_path / f"img-{uuid.uuid4().hex[:6]}.tar")


def test_absolute_path(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    target = str(outside / "abs-evil")
    layer = layer_tar([E("ok", data=b"1"), E(target, data=b"pwned")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "absolute path")
    assert not os.path.exists(target)


def test_dotdot_path(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    rel = "../" * 12 + str(outside / "dotdot-evil").lstrip("/")
    layer = layer_tar([E("a", "dir"), E("a/" + rel, data=b"pwned")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "'..'")


def test_entry_through_symlink(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("link", "symlink", link=str(outside)), E("link/victim", data=b"pwned")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "symlink")


def test_entry_through_relative_symlink(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("d", "dir"), E("d/up", "symlink", link="../../../../../../.."),
                       E("d/up/" + str(outside / "rel-evil").lstrip("/"), data=b"pwned")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "symlink")


def test_hardlink_to_outside(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("h", "hardlink", link=str(outside / "victim"))])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "hardlink", "outside")


def test_hardlink_to_a_name_not_in_the_layer(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    # resolving it against the extraction dir's parents would reach a host file
    layer = layer_tar([E("h", "hardlink", link="etc/passwd")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "hardlink", "not an earlier entry")


def test_hardlink_through_symlink(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("s", "symlink", link=str(outside)), E("h", "hardlink", link="s/victim")])
    _refused(cli, root, outside, _archive(tmp_path, [layer]), "hardlink")


@pytest.mark.parametrize("kind,major,minor", [("chr", 1, 3), ("blk", 8, 0), ("chr", 5, 1)])
def test_device_node_is_left_out(cli, root: Path, tmp_path: Path, kind: str, major: int,
                                 minor: int) -> None:
    """A layer with device files (every debootstrap/mmdebstrap root file system
    has /dev/null, /dev/console) loads, and no device file exists in the store:
    one would open the host's device."""
    layer = layer_tar([E("dev", "dir"), E("dev/node", kind, major=major, minor=minor),
                       E("etc", "dir"), E("etc/hostname", data=b"box\n")])
    r = cli("image", "load", str(_archive(tmp_path, [layer])))
    assert r.returncode == 0, r.stderr
    devices = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISBLK(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev != 0):
                devices.append(os.path.join(dirpath, n))
    assert devices == []
    assert any(p.endswith("/etc/hostname") for p in _files(root))


def _files(root: Path) -> list[str]:
    return [os.path.join(d, n) for d, _, files in os.walk(root) for n in files]


def test_truncated_layer_tar(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    full = layer_tar([E("a", data=os.urandom(4000)), E("b", data=b"2")])
    cut = full[:1500]  # inside a's content; the digests are computed over the cut bytes
    _refused(cli, root, outside, _archive(tmp_path, [cut], compression="none"), "truncated")


def test_truncated_header(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    full = layer_tar([E("a", data=b"x" * 512), E("b", data=b"2")])
    cut = full[: 1024 + 100]  # entry a (header + one data block), then part of b's header
    _refused(cli, root, outside, _archive(tmp_path, [cut], compression="none"), "truncated")


def test_garbage_header_after_first_entry(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    full = layer_tar([E("a", data=b"x" * 512)])
    garbage = full[:1024] + os.urandom(512) + b"\0" * 1024
    _refused(cli, root, outside, _archive(tmp_path, [garbage], compression="none"), "corrupt")


def test_corrupt_gzip(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=os.urandom(20000))])
    gz = bytearray(gzip.compress(layer))
    for i in range(200, 260):
        gz[i] ^= 0xFF
    _refused(cli, root, outside,
             _archive(tmp_path, [layer], layer_blobs=[bytes(gz)], compression="gzip"), "not a valid")


def test_corrupt_zstd(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=os.urandom(20000))])
    z = bytearray(compress(layer, "zstd"))
    for i in range(100, 160):
        z[i] ^= 0xFF
    # zstd frames carry no checksum by default: the diff_id check catches what
    # the decoder does not
    msg = _refused(cli, root, outside,
                   _archive(tmp_path, [layer], layer_blobs=[bytes(z)], compression="zstd"))
    assert "not a valid" in msg or "digest mismatch" in msg, msg


def test_blob_digest_mismatch(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=b"good")])
    files = image_files([layer])
    name = "blobs/sha256/" + sha(compress(layer, "gzip"))[7:]
    files[name] = compress(layer_tar([E("a", data=b"evil")]), "gzip")
    _refused(cli, root, outside, write_tar(files, tmp_path / "x.tar"), "digest mismatch")


def test_diff_id_mismatch(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=b"good")])
    _refused(cli, root, outside, _archive(tmp_path, [layer], diff_ids=["sha256:" + "0" * 64]),
             "digest mismatch", "diff_id")


def test_manifest_names_missing_blob(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=b"1")])
    files = image_files([layer])
    del files["blobs/sha256/" + sha(compress(layer, "gzip"))[7:]]
    _refused(cli, root, outside, write_tar(files, tmp_path / "x.tar"), "missing blob")


def test_missing_blob_in_layout_dir(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    layer = layer_tar([E("a", data=b"1")])
    files = image_files([layer])
    del files["blobs/sha256/" + sha(compress(layer, "gzip"))[7:]]
    _refused(cli, root, outside, write_dir(files, tmp_path / "layout"), "missing blob")


def test_truncated_archive(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    p = _archive(tmp_path, [layer_tar([E("a", data=os.urandom(30000))])], compression="none")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _refused(cli, root, outside, p)


def test_malformed_index(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    files = image_files([layer_tar([E("a")])])
    files["index.json"] = b"{not json"
    _refused(cli, root, outside, write_tar(files, tmp_path / "x.tar"), "index.json")


def test_digest_with_path_in_it(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    files = image_files([layer_tar([E("a")])])
    index = json.loads(files["index.json"])
    index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd"
    files["index.json"] = json.dumps(index).encode()
    _refused(cli, root, outside, write_dir(files, tmp_path / "layout"), "invalid")


def test_not_an_image(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    p = tmp_path / "junk"
    p.write_bytes(b"hello")
    _refused(cli, root, outside, p)
    r = cli("image", "load", str(tmp_path / "missing.tar"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_bad_tag(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    p = _archive(tmp_path, [layer_tar([E("a")])])
    r = cli("image", "load", str(p), "--tag", "UPPER/Case:x")
    assert r.returncode == 2 and "invalid image reference" in r.stderr
    store_is_empty(root)


def test_second_layer_bad_leaves_first_out(cli, root: Path, tmp_path: Path, outside: Path) -> None:
    good = layer_tar([E("fine", data=b"1")])
    bad = layer_tar([E("/abs", data=b"2")])
    _refused(cli, root, outside, _archive(tmp_path, [good, bad]), "absolute")
