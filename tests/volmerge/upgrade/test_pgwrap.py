"""The old image's programs run through wrappers (volmerge.upgrade.pgwrap):
the ELF loader read from the binary, the library directories from the
image's loader configuration, and a real run of Debian's PostgreSQL 15
through them — its siblings (initdb starts postgres) and its share
directory found through the mirror."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.pg import PG15_BIN, require_pg15
from volmerge.upgrade.pgwrap import elf_interp, ld_conf_dirs, write_wrappers


def test_elf_interp_of_a_dynamic_binary_static_and_not_elf(tmp_path: Path) -> None:
    with open("/bin/sh", "rb") as f:
        assert elf_interp(f.read(8192)) in ("/lib64/ld-linux-x86-64.so.2",
                                            "/lib/ld-linux-aarch64.so.1")
    assert elf_interp(b"#!/bin/sh\necho hi\n" + b"\0" * 64) is None
    assert elf_interp(b"\x7fELF" + b"\0" * 100) is None  # no class, no headers
    with open("/bin/sh", "rb") as f:
        head = bytearray(f.read(8192))
    assert elf_interp(bytes(head[:60])) is None  # headers cut off: None, no exception


def test_library_dirs_from_the_images_loader_configuration(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for d in ("etc/ld.so.conf.d", "opt/pg/lib", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/ld.so.conf").write_text("# comment\ninclude /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/pg.conf").write_text("/opt/pg/lib\n/does/not/exist\n")
    (root / "etc/ld.so.conf.d/loop.conf").write_text("include /etc/ld.so.conf\n")
    dirs = ld_conf_dirs(root)
    assert dirs[0] == "/opt/pg/lib"
    assert "/usr/lib/x86_64-linux-gnu" in dirs and "/lib" in dirs and "/usr/lib" in dirs
    assert "/does/not/exist" not in dirs and len(dirs) == len(set(dirs))


def test_wrappers_mirror_the_bin_path_and_name_the_old_loader(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/postgresql/15/bin").mkdir(parents=True)
    (root / "usr/lib/postgresql/15/lib").mkdir()
    (root / "usr/share/postgresql/15").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib64").mkdir()
    # an absolute symlink, as Debian ships the loader: resolved inside the image
    os.symlink("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "lib64/ld-linux-x86-64.so.2")
    (root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").write_bytes(b"loader")
    shutil.copy("/bin/sh", root / "usr/lib/postgresql/15/bin/postgres")
    (root / "usr/lib/postgresql/15/bin/script").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/lib/postgresql/15/bin/script", 0o755)
    out = Path(write_wrappers(root, "/usr/lib/postgresql/15/bin", tmp_path / "mirror",
                              mount_at="/.old"))
    assert out == tmp_path / "mirror/usr/lib/postgresql/15/bin"
    assert sorted(os.listdir(out)) == ["postgres"]  # scripts are not wrapped
    text = (out / "postgres").read_text()
    assert "exec /.old/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path" in text
    assert '--argv0 "$0" /.old/usr/lib/postgresql/15/bin/postgres "$@"' in text
    assert os.readlink(tmp_path / "mirror/usr/lib/postgresql/15/lib") == "/.old/usr/lib/postgresql/15/lib"
    assert os.readlink(tmp_path / "mirror/usr/share") == "/.old/usr/share"


def test_postgres_15_runs_through_its_wrappers(tmp_path: Path) -> None:
    """This host's root as "the old image" (mounted at /): initdb through
    its wrapper finds the wrapped postgres beside it and its share directory
    through the mirror, and makes a cluster."""
    require_pg15()
    from volmerge.strategies.sql.pgtemp import give
    from volmerge.upgrade.pgdata import host_tools

    bindir = write_wrappers(Path("/"), PG15_BIN, tmp_path / "mirror", mount_at="")
    tools = host_tools(bindir)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    give(str(data), tools.user)  # and its parents traversable
    v = tools.run("postgres", "-V")
    assert v.returncode == 0 and v.stdout.startswith("postgres (PostgreSQL) 15"), v.stderr
    p = tools.run("initdb", "-D", str(data), "-U", "postgres", "--no-sync", "-E", "UTF8",
                  "--locale=C.UTF-8")
    assert p.returncode == 0, p.stderr
    assert (data / "PG_VERSION").read_text().strip() == "15"
