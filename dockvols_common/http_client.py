"""HTTP/1.1 over every transport dockvols speaks: a unix socket (esx_service's VM-facing and
admin APIs, the plugin's own socket, the Docker engine), vsock (a guest to its ESXi host,
CID 2), TCP and mutual TLS. One connection class per transport, one way to pick it from an
address, one request-and-read.

Failures are the standard library's (OSError and its TimeoutError, http.client.HTTPException;
ValueError for a bad address): each side turns them into its own error family at its edge,
and only it knows what to tell its user.
"""

from __future__ import annotations

import http.client
import socket
import ssl

Address = str  # unix:///path, vsock://CID:PORT, http://host:port, https://host:port


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; ``timeout`` bounds the connect and each read."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class VsockHTTPConnection(http.client.HTTPConnection):
    """HTTP over vsock: from a guest, its ESXi host is CID 2."""

    def __init__(self, cid: int, port: int, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.address = (cid, port)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.address)
        self.sock = sock


def parse_vsock_address(address: Address) -> tuple[int, int]:
    """``vsock://CID:PORT`` -> (cid, port)."""
    cid, sep, port = address[len("vsock://"):].rstrip("/").partition(":")
    if not sep or not cid.isdigit() or not port.isdigit():
        raise ValueError(f"invalid vsock address {address!r}: use vsock://CID:PORT, "
                         "e.g. vsock://2:1019 for this VM's ESXi host")
    return int(cid), int(port)


def client_tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """Mutual TLS: our certificate names this VM; the service's must chain to ``ca_file``."""
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    return context


def open_connection(address: Address, timeout: float,
                    tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to ``address``, not yet connected (the first request connects)."""
    if address.startswith("unix://"):
        return UnixHTTPConnection(address[len("unix://"):], timeout)
    if address.startswith("vsock://"):
        return VsockHTTPConnection(*parse_vsock_address(address), timeout)
    host = address.split("://", 1)[1].rstrip("/")
    if address.startswith("https://"):
        return http.client.HTTPSConnection(host, timeout=timeout, context=tls)
    return http.client.HTTPConnection(host, timeout=timeout)


def exchange(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on ``conn`` and its whole answer (the connection stays open)."""
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def request(conn: http.client.HTTPConnection, method: str, path: str,
            body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on ``conn`` and its whole answer, then the connection is closed, whether
    the request succeeded or not."""
    try:
        return exchange(conn, method, path, body, headers)
    finally:
        conn.close()


# -- the lean read path -------------------------------------------------------------------
MAX_LINE = 65536
MAX_HEADERS = 100


class Answer:
    """What ``lean_exchange`` read: the parts of an http.client response its callers use."""

    __slots__ = ("status", "headers", "will_close")

    def __init__(self, status: int, headers: dict[str, str], will_close: bool) -> None:
        self.status = status
        self.headers = headers  # names lower-cased
        self.will_close = will_close


class _Reader:
    """Buffered reads straight from the socket (no makefile, which would keep the socket's
    descriptor open after the connection closes it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line, self.buf = self.buf[:end + 1], self.buf[end + 1:]
                return line
            if len(self.buf) > MAX_LINE:
                raise http.client.LineTooLong("header line")
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk

    def exactly(self, n: int) -> bytes:
        have = len(self.buf)
        if have >= n:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        # straight into one buffer of the answer's size: a List of thousands of volumes
        # is megabytes, which appending chunk by chunk would copy over and over
        out = bytearray(n)
        out[:have] = self.buf
        self.buf = b""
        view = memoryview(out)
        while have < n:
            got = self.sock.recv_into(view[have:])
            if not got:
                raise http.client.IncompleteRead(bytes(out[:have]), n - have)
            have += got
        return bytes(out)

    def rest(self) -> bytes:
        parts = [self.buf]
        self.buf = b""
        while chunk := self.sock.recv(65536):
            parts.append(chunk)
        return b"".join(parts)


def lean_exchange(conn: http.client.HTTPConnection, method: str, path: str,
                  body: bytes | None = None,
                  content_type: str = "application/json") -> tuple[Answer, bytes]:
    """A request on ``conn`` (kept alive) and its whole answer, written in one send and read
    without http.client's response machinery (issue 15: http.client makes a file object per
    response and parses headers through email.parser, about 0.2 ms of a Get's second hop).
    ``body``, if any, goes with its Content-Length and ``content_type``. Raises what
    http.client would for a connection the server closed (RemoteDisconnected) or a
    malformed answer (HTTPException)."""
    if conn.sock is None:
        conn.connect()
    sock = conn.sock
    reader: _Reader | None = getattr(conn, "_dockvols_reader", None)
    if reader is None or reader.sock is not sock:
        reader = _Reader(sock)
        conn._dockvols_reader = reader  # type: ignore[attr-defined]
    head = f"{method} {path} HTTP/1.1\r\nHost: {conn.host}\r\nAccept-Encoding: identity\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
    while True:
        line = reader.line()
        if not line:
            raise http.client.RemoteDisconnected("remote end closed connection without response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise http.client.BadStatusLine(line.decode("latin-1"))
        headers = _read_headers(reader)
        if int(code) >= 200:
            break  # a 1xx (100 Continue) is followed by the real answer
    status = int(code)
    connection = headers.get("connection", "").lower()
    will_close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise http.client.HTTPException(
                f"bad Content-Length {headers['content-length']!r}") from None
        body = reader.exactly(length)
    else:
        body, will_close = reader.rest(), True
    return Answer(status, headers, will_close), body


def _read_headers(reader: _Reader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = reader.line()
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise http.client.RemoteDisconnected("connection closed inside the headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")


def _read_chunked(reader: _Reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = reader.line()
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            while reader.line() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(reader.exactly(size))
        reader.exactly(2)  # the CRLF after the chunk
