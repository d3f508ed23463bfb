"""Build small OCI images in tests: layer tars from entry lists, then an OCI
layout (as a directory or an oci-archive) or a docker-archive.

``image_files`` returns the archive's files as a dict so that hostile tests
can tamper with any of them before writing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MTIME = 1_700_000_000


@dataclass
class E:
    """One layer entry."""

    name: str
    kind: str = "file"          # file dir symlink hardlink chr blk fifo
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    mtime: int = MTIME


_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES[e.kind]
            ti.mode = e.mode if e.kind != "dir" or e.mode != 0o644 else 0o755
            ti.uid, ti.gid, ti.mtime = e.uid, e.gid, e.mtime
            ti.linkname = e.link
            ti.devmajor, ti.devminor = e.major, e.minor
            if e.xattrs:
                ti.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in e.xattrs.items()
                }
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _mt(how: str) -> str:
    base = "application/vnd.oci.image.layer.v1.tar"
    return {"gzip": base + "+gzip", "zstd": base + "+zstd"}.get(how, base)


def image_files(layers: list[bytes], *, compression: str = "gzip", ref: str | None = "localhost/test:1",
                config: dict[str, Any] | None = None, blobs: dict[str, bytes] | None = None,
                diff_ids: list[str] | None = None, layer_blobs: list[bytes] | None = None) -> dict[str, bytes]:
    """An OCI layout as {path: bytes}.  ``layer_blobs`` overrides the stored
    (compressed) bytes while digests are computed over them; ``diff_ids``
    overrides the config's list."""
    stored = layer_blobs if layer_blobs is not None else [compress(x, compression) for x in layers]
    cfg = {
        "created": "2024-01-02T03:04:05Z",
        "architecture": _arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else [sha(x) for x in layers]},
        "history": [{"created_by": "test"} for _ in layers],
    }
    if config:
        cfg["config"].update(config)
    cbytes = json.dumps(cfg).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cbytes), "size": len(cbytes)},
        "layers": [{"mediaType": _mt(compression), "digest": sha(b), "size": len(b)} for b in stored],
    }
    mbytes = json.dumps(manifest).encode()
    desc: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": sha(mbytes), "size": len(mbytes)}
    if ref:
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref}
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode(),
    }
    for b in [cbytes, mbytes, *stored]:
        files["blobs/sha256/" + sha(b)[7:]] = b
    files.update(blobs or {})
    return files


def docker_files(layers: list[bytes], *, tag: str = "localhost/dtest:1") -> dict[str, bytes]:
    cfg = {
        "created": "2024-01-02T03:04:05Z", "architecture": _arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
    }
    cbytes = json.dumps(cfg).encode()
    files = {f"{sha(cbytes)[7:]}.json": cbytes}
    names = []
    for x in layers:
        n = f"{sha(x)[7:]}.tar"
        files[n] = x
        names.append(n)
    files["manifest.json"] = json.dumps([{"Config": f"{sha(cbytes)[7:]}.json", "RepoTags": [tag], "Layers": names}]).encode()
    return files


def config_digest(files: dict[str, bytes]) -> str:
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    return manifest["config"]["digest"]


def write_dir(files: dict[str, bytes], d: Path) -> Path:
    for name, data in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return d


def write_tar(files: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def snapshot(root: Path, *, skip_root: bool = True) -> dict[str, tuple]:
    """{relative path: (type, mode, uid, gid, content sha / link / rdev)}."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra: Any = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                extra = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


def busybox_rootfs(d: Path) -> Path:
    """A tiny rootfs with busybox-static and a spread of metadata."""
    (d / "bin").mkdir(parents=True)
    bb = d / "bin" / "busybox"
    with open("/bin/busybox", "rb") as src:
        bb.write_bytes(src.read())
    bb.chmod(0o755)
    for applet in ("sh", "ls", "true", "cat"):
        os.symlink("busybox", d / "bin" / applet)
    (d / "etc").mkdir(mode=0o755)
    (d / "etc" / "motd").write_text("hello\n")
    os.link(d / "etc" / "motd", d / "etc" / "motd.hard")
    os.symlink("/etc/motd", d / "etc" / "motd.abs")
    (d / "tmp").mkdir()
    (d / "tmp").chmod(0o1777)
    (d / "home" / "app").mkdir(parents=True)
    (d / "home" / "app" / "data.bin").write_bytes(os.urandom(3000))
    os.chown(d / "home" / "app", 1000, 1000)
    os.chown(d / "home" / "app" / "data.bin", 1000, 100)
    (d / "home" / "app").chmod(0o750)
    (d / "home" / "app" / "data.bin").chmod(0o640)
    (d / "empty").write_bytes(b"")
    (d / "secret").mkdir(mode=0o700)
    (d / "secret" / "key").write_text("k")
    (d / "secret" / "key").chmod(0o600)
    (d / "sbin").mkdir()
    (d / "sbin" / "suid").write_bytes(b"#!/bin/sh\n")
    (d / "sbin" / "suid").chmod(0o4755)
    return d
