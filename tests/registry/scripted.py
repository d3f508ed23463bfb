"""A small registry written for the tests, for what a real one will not do:
drop a blob's connection half-way (resume), serve a manifest that is too
large, demand a Bearer token from a token server, refuse a cross-repository
mount with an error (pushes: monolithic uploads and manifests are taken).  HTTPS on loopback with the
test CA, HTTP/1.1, in a thread of the test process (nothing to leak)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .server import Pki

TOKEN = "t0ken-for-tests"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Scripted:
    def __init__(self, pki: Pki, *, bearer: bool = False,
                 user: str | None = None, password: str | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}   # tag or digest -> (bytes, type)
        self.cut_once: dict[str, int] = {}                  # digest -> bytes sent before a drop
        self.hold: dict[str, tuple[int, threading.Event]] = {}  # digest -> (offset, go on)
        self.ignore_range = False                           # answer a Range with the whole blob
        self.fail_blobs = 0                                 # answer blob GETs with this (500)
        self.fail_after_cut = 0                             # set fail_blobs to this after a cut
        self.bearer = bearer
        self.basic = (base64.b64encode(f"{user}:{password}".encode()).decode()
                      if user is not None else None)
        self.mount_refuse = 0                               # answer POST ?mount= with this
        self.uploads = 0
        self.log: list[tuple[str, str, str]] = []           # (method, path, Range)
        self.tokens_given = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                owner.log.append((self.command, self.path, self.headers.get("Range", "")))
                if self.path.startswith("/token"):
                    return self._token()
                if owner.bearer and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    realm = f"https://{owner.host}/token"
                    return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                        "WWW-Authenticate":
                            f'Bearer realm="{realm}",service="scripted",scope="repository:x:pull"'})
                if self.path == "/v2/":
                    return self._send(200, b"{}")
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", self.path)
                if not m:
                    return self._send(404, b"{}")
                if m.group(2) == "manifests":
                    got = owner.manifests.get(m.group(3))
                    if got is None:
                        return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN",'
                                               b'"message":"manifest unknown"}]}')
                    return self._send(200, got[0], {"Content-Type": got[1],
                                                    "Docker-Content-Digest": sha(got[0])}, head)
                data = owner.blobs.get(m.group(3))
                if data is None:
                    return self._send(404, b"{}")
                if owner.fail_blobs:
                    return self._send(owner.fail_blobs, b"{}")
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if owner.ignore_range:
                    rng = None
                if rng:
                    start = int(rng.group(1))
                    if start >= len(data):
                        return self._send(416, b"")
                    part = data[start:]
                    hdr = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                    return self._send(206, part, hdr, head)
                cut = owner.cut_once.pop(m.group(3), None)
                if cut is not None:   # promise everything, send `cut` bytes, hang up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    owner.fail_blobs = owner.fail_after_cut or owner.fail_blobs
                    return
                held = owner.hold.pop(m.group(3), None)
                if held is not None:  # send up to the offset, wait for the test, then the rest
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: held[0]])
                    self.wfile.flush()
                    held[1].wait(30)
                    self.wfile.write(data[held[0]:])
                    return
                return self._send(200, data, {}, head)

            def do_POST(self) -> None:
                owner.log.append((self.command, self.path, ""))
                m = re.fullmatch(r"/v2/(.+)/blobs/uploads/(\?.*)?", self.path)
                if not m:
                    return self._send(404, b"{}")
                if "mount=" in self.path and owner.mount_refuse:
                    return self._send(owner.mount_refuse, b'{"errors":[{"code":"DENIED",'
                                                          b'"message":"mount refused"}]}')
                owner.uploads += 1
                self._send(202, b"", {"Location": f"/v2/{m.group(1)}/blobs/uploads/u{owner.uploads}"})

            def do_PUT(self) -> None:
                owner.log.append((self.command, self.path, ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                m = re.fullmatch(r"/v2/(.+)/blobs/uploads/[^?]+\?digest=(sha256:[0-9a-f]{64})",
                                 self.path)
                if m:
                    if sha(body) != m.group(2):
                        return self._send(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                    owner.blobs[m.group(2)] = body
                    return self._send(201, b"", {"Docker-Content-Digest": m.group(2)})
                m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", self.path)
                if not m:
                    return self._send(404, b"{}")
                got = (body, self.headers.get("Content-Type", ""))
                owner.manifests[m.group(2)] = owner.manifests[sha(body)] = got
                self._send(201, b"", {"Docker-Content-Digest": sha(body)})

            def _token(self) -> None:
                if owner.basic is not None and \
                        self.headers.get("Authorization") != f"Basic {owner.basic}":
                    return self._send(401, b"{}")
                owner.tokens_given += 1
                self._send(200, json.dumps({"token": TOKEN}).encode())

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None,
                      head: bool = False) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.cert_dir = pki.dir / "certs.d" / self.host
        self.cert_dir.mkdir(parents=True)
        shutil.copy(pki.ca, self.cert_dir / "ca.crt")
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve_layout(self, files: dict[str, bytes], name: str, tag: str) -> str:
        """Serve the OCI image of ``files`` (tests/runtime/images/builders) as NAME:TAG."""
        index = json.loads(files["index.json"])
        desc = index["manifests"][0]
        for path, data in files.items():
            if path.startswith("blobs/sha256/"):
                self.blobs["sha256:" + path.rsplit("/", 1)[1]] = data
        manifest = self.blobs[desc["digest"]]
        self.manifests[tag] = self.manifests[desc["digest"]] = (manifest, desc["mediaType"])
        return f"{self.host}/{name}:{tag}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        shutil.rmtree(self.cert_dir, ignore_errors=True)
