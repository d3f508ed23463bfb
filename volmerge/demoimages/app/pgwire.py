"""A minimal PostgreSQL client for the notes app (standard library only).

The app image holds Python's standard library and nothing else, so the
stack's app speaks PostgreSQL's frontend/backend protocol (version 3.0)
itself, over TCP on the project network (or a unix socket: the tests), with
trust authentication (the demo's database image accepts its network without
a password).  That is
smaller and sturdier than shipping psql and its libpq closure into the
image and running one psql process per request: a hundred lines, no
subprocess, no shell, no quoting.

Values never go into SQL text: ``query(sql, *params)`` uses the extended
protocol (Parse, Bind, Execute, Sync), the parameters travel as separate
text values (``$1``, ``$2``...), so a note's text cannot change a
statement.  ``script(sql)`` runs the app's own fixed statements (schema
migrations, several at once) with the simple-query protocol.  Rows come
back as tuples of ``str`` (or None for NULL): the app converts.
"""

from __future__ import annotations

import socket
import struct

PROTOCOL_3 = 196608
MAX_MESSAGE = 64 << 20  # a hostile server does not make us allocate more


class PgError(RuntimeError):
    """An error the server reported, or a broken conversation."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _cstr(s: str) -> bytes:
    b = s.encode()
    if b"\0" in b:
        raise PgError("a NUL byte cannot be sent to PostgreSQL")
    return b + b"\0"


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _error(body: bytes) -> PgError:
    fields = {f[:1]: f[1:].decode("utf-8", "replace") for f in body.split(b"\0") if f}
    return PgError(f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}",
                   fields.get(b"C", ""))


class Connection:
    """One session; not shared between threads (the app opens one per request)."""

    def __init__(self, host: str, port: int = 5432, user: str = "postgres",
                 database: str = "postgres", timeout: float = 5.0) -> None:
        if host.startswith("/"):  # a socket directory, as libpq reads it
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(f"{host}/.s.PGSQL.{port}")
            except BaseException:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        try:
            params = (_cstr("user") + _cstr(user) + _cstr("database") + _cstr(database)
                      + _cstr("client_encoding") + _cstr("UTF8") + b"\0")
            body = struct.pack("!i", PROTOCOL_3) + params
            self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
            self._until_ready()
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.sendall(_msg(b"X", b""))
        except OSError:
            pass
        self.sock.close()

    # -- reading ----------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise PgError("the server closed the connection")
            buf += chunk
        return bytes(buf)

    def _message(self) -> tuple[bytes, bytes]:
        head = self._read(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        if length < 4 or length > MAX_MESSAGE:
            raise PgError(f"bad message length {length} from the server")
        return kind, self._read(length - 4)

    def _until_ready(self) -> list[tuple[str | None, ...]]:
        """Read to ReadyForQuery; the data rows seen, or the first error raised."""
        rows: list[tuple[str | None, ...]] = []
        err: PgError | None = None
        while True:
            kind, body = self._message()
            if kind == b"Z":
                if err is not None:
                    raise err
                return rows
            try:
                if kind == b"D":
                    rows.append(_row(body))
                elif kind == b"E":
                    err = err or _error(body)
                elif kind == b"R" and (code := struct.unpack("!i", body[:4])[0]) != 0:
                    raise PgError(f"the server asks for authentication (method {code}); "
                                  "the notes app speaks trust authentication only")
            except (struct.error, UnicodeDecodeError) as exc:
                raise PgError(f"a malformed {kind!r} message from the server: {exc}") from None
            # ParameterStatus, BackendKeyData, notices, completions: nothing to do

    # -- queries ----------------------------------------------------------------
    def query(self, sql: str, *params: str | None) -> list[tuple[str | None, ...]]:
        """One statement, its parameters as text values apart from the SQL."""
        bind = b"\0\0" + struct.pack("!h", 0) + struct.pack("!h", len(params))
        for p in params:
            if p is None:
                bind += struct.pack("!i", -1)
            else:
                v = _cstr(p)[:-1]
                bind += struct.pack("!i", len(v)) + v
        bind += struct.pack("!h", 0)
        self.sock.sendall(_msg(b"P", b"\0" + _cstr(sql) + struct.pack("!h", 0))
                          + _msg(b"B", bind) + _msg(b"E", b"\0" + struct.pack("!i", 0))
                          + _msg(b"S", b""))
        return self._until_ready()

    def script(self, sql: str) -> list[tuple[str | None, ...]]:
        """Fixed statements of the app's own (no values from outside), in one
        implicit transaction: the simple-query protocol."""
        self.sock.sendall(_msg(b"Q", _cstr(sql)))
        return self._until_ready()


def _row(body: bytes) -> tuple[str | None, ...]:
    (n,) = struct.unpack("!h", body[:2])
    pos, out = 2, list[str | None]()
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[pos:pos + 4])
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + ln].decode())
            pos += ln
    return tuple(out)
