"""A real registry for the tests: Debian's docker-registry (distribution 2.8)
on loopback, TLS with a CA and a certificate the test makes (openssl), and an
htpasswd user (bcrypt, ``htpasswd -B``).  Nothing of the host is used or
changed: the CA is trusted through a certs.d directory of the test's own
(``VOLMERGE_CERTS_D`` for volmerge, ``--cert-dir`` for podman and skopeo)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "tester", "s3cret-pw"


def _run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> str:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert p.returncode == 0, f"{argv[0]}: {p.stderr}"
    return p.stdout


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost."""

    dir: Path
    ca: Path
    cert: Path
    key: Path


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt",
         "-days", "2", "-subj", "/CN=volmerge test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _run("openssl", "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr",
         "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run("openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt",
         "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "server.crt", "-days", "2",
         "-extfile", d / "ext.cnf")
    return Pki(d, d / "ca.crt", d / "server.crt", d / "server.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"registry exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<free port>; ``stop()`` leaves nothing."""

    def __init__(self, base: Path, pki: Pki, *, auth: bool = True) -> None:
        self.base = base
        self.pki = pki
        self.auth = auth
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = base / "storage"
        self.storage.mkdir(parents=True)
        # certs.d/<host:port>/ca.crt: the podman / Docker convention (one
        # root for every registry of the session)
        self.certs_d = pki.dir / "certs.d"
        self.cert_dir = self.certs_d / self.host
        self.cert_dir.mkdir(parents=True)
        shutil.copy(pki.ca, self.cert_dir / "ca.crt")
        lines = ["version: 0.1",
                 "log: {level: error, accesslog: {disabled: true}}",
                 f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}",
                 f"http: {{addr: '{self.host}', secret: {secrets.token_hex(16)},"
                 f" tls: {{certificate: {pki.cert}, key: {pki.key}}}}}"]
        if auth:
            htpasswd = base / "htpasswd"
            htpasswd.write_text(_run("htpasswd", "-Bbn", USER, PASSWORD))
            lines.append(f"auth: {{htpasswd: {{realm: volmerge-test, path: {htpasswd}}}}}")
        self.config = base / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def creds(self) -> str:
        return f"{USER}:{PASSWORD}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def blob_data(self, digest: str) -> Path:
        """Where distribution keeps a blob's bytes (to tamper with in tests)."""
        hx = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hx[:2] / hx / "data"

    def skopeo_copy(self, podman, src: str, name: str, *extra: str) -> None:
        """``skopeo copy SRC docker://HOST/NAME`` with the test CA (and credentials)."""
        args = ["copy", "--dest-cert-dir", str(self.cert_dir), *extra]
        if self.auth:
            args += ["--dest-creds", self.creds]
        podman(*args, src, f"docker://{self.ref(name)}", tool="skopeo")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
