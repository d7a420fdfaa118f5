"""The one HTTP client connection, over a real unix socket served by http.server."""

from __future__ import annotations

import http.client
import http.server
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvols_common.http_client import (
    UnixHTTPConnection,
    VsockHTTPConnection,
    exchange,
    lean_exchange,
    open_connection,
    request,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as esx_service's server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply = f"{self.command} {self.path} {body.decode()} " \
                f"{self.headers.get('X-Test', '-')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST

    def address_string(self) -> str:  # a unix peer has no (host, port)
        return "unix"

    def log_message(self, *args: object) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def served() -> Iterator[tuple[str, list]]:
    """A unix socket path with an HTTP server behind it, and the connections it accepted."""
    with tempfile.TemporaryDirectory(prefix="dv-", dir="/tmp") as run:  # short socket path
        path = str(Path(run) / "s.sock")
        accepted: list = []

        class Server(_UnixServer):
            def get_request(self):  # type: ignore[no-untyped-def]
                conn = super().get_request()
                accepted.append(conn)
                return conn

        server = Server(path, _Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield path, accepted
        finally:
            server.shutdown()
            server.server_close()


def test_a_unix_connection_keeps_alive_across_exchanges(served: tuple[str, list]) -> None:
    path, accepted = served
    conn = UnixHTTPConnection(path, 5)
    try:
        first = exchange(conn, "POST", "/a", b"one", {"X-Test": "h"})
        second = exchange(conn, "GET", "/b")
    finally:
        conn.close()
    assert first[0].status == 200 and first[1] == b"POST /a one h"
    assert second[1] == b"GET /b  -"
    assert len(accepted) == 1  # both on one connection


def test_request_answers_and_closes_its_connection(served: tuple[str, list]) -> None:
    path, _ = served
    conn = open_connection(f"unix://{path}", 5)
    response, raw = request(conn, "POST", "/x", b"y")
    assert (response.status, raw) == (200, b"POST /x y -")
    assert conn.sock is None


def test_request_closes_its_connection_when_the_peer_is_absent(tmp_path: Path) -> None:
    conn = UnixHTTPConnection(str(tmp_path / "nobody.sock"), 5)
    with pytest.raises(FileNotFoundError):
        request(conn, "GET", "/")
    assert conn.sock is None


def test_an_address_picks_its_transport() -> None:
    unix = open_connection("unix:///run/dockvols/esx.sock", 7)
    assert isinstance(unix, UnixHTTPConnection)
    assert (unix.path, unix.timeout) == ("/run/dockvols/esx.sock", 7)
    vsock = open_connection("vsock://2:1019", 7)
    assert isinstance(vsock, VsockHTTPConnection) and vsock.address == (2, 1019)
    tls = ssl.create_default_context()
    https = open_connection("https://esx.example:9443/", 7, tls)
    assert isinstance(https, http.client.HTTPSConnection)
    assert (https.host, https.port) == ("esx.example", 9443)
    plain = open_connection("http://127.0.0.1:9440", 7)
    assert type(plain) is http.client.HTTPConnection and plain.port == 9440
    with pytest.raises(ValueError, match="vsock://CID:PORT"):
        open_connection("vsock://host:1019", 7)


# -- lean_exchange: the plugin's read path to esx_service ---------------------------------
def _scripted(answers: list[bytes], tmp: Path) -> tuple[str, list[bytes]]:
    """A unix socket server that answers each request on one connection with the next of
    ``answers`` as raw bytes (``b""``: close instead), recording what it read."""
    import socket as _socket

    path = str(tmp / "s.sock")
    listener = _socket.socket(_socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for answer in answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                seen.append(data)
                if not answer:
                    return
                conn.sendall(answer)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return path, seen


def test_lean_exchange_keeps_the_connection_and_reads_each_framing(short_tmp: Path) -> None:
    path, seen = _scripted([
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nfirst",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n3\r\nsec\r\n3;x=1\r\nond\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthird until close",
    ], short_tmp)
    conn = UnixHTTPConnection(path, 5)
    first, body = lean_exchange(conn, "GET", "/v1/volumes/a")
    assert (first.status, body, first.will_close) == (200, b"first", False)
    assert first.headers["content-type"] == "application/json"
    sock = conn.sock
    second, body = lean_exchange(conn, "GET", "/v1/volumes/b")
    assert (second.status, body, second.will_close) == (404, b"second", False)
    assert conn.sock is sock  # one connection for all three
    third, body = lean_exchange(conn, "GET", "/v1/volumes/c")
    assert (third.status, body, third.will_close) == (200, b"third until close", True)
    assert seen[0].startswith(b"GET /v1/volumes/a HTTP/1.1\r\nHost: localhost\r\n")
    assert [s.split(b" ")[1] for s in seen] == [b"/v1/volumes/a", b"/v1/volumes/b",
                                                 b"/v1/volumes/c"]
    conn.close()


def test_lean_exchange_on_a_connection_the_server_closed_is_remote_disconnected(
        short_tmp: Path) -> None:
    """What the plugin's client retries once on a new connection (a stale kept-alive one)."""
    path, _ = _scripted([b""], short_tmp)
    conn = UnixHTTPConnection(path, 5)
    with pytest.raises(http.client.RemoteDisconnected):
        lean_exchange(conn, "GET", "/v1/status")
    conn.close()


def test_lean_exchange_refuses_a_garbled_status_line(short_tmp: Path) -> None:
    path, _ = _scripted([b"SPDY/3 200 OK\r\n\r\n"], short_tmp)
    conn = UnixHTTPConnection(path, 5)
    with pytest.raises(http.client.BadStatusLine):
        lean_exchange(conn, "GET", "/v1/status")
    conn.close()


def test_lean_exchange_reads_a_body_of_megabytes_whole(short_tmp: Path) -> None:
    """A List of thousands of volumes arrives in many reads."""
    body = bytes(range(256)) * 12289  # about 3 MB, not a multiple of any read size
    path, _ = _scripted([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body],
                        short_tmp)
    conn = UnixHTTPConnection(path, 5)
    answer, got = lean_exchange(conn, "GET", "/v1/volumes")
    assert answer.status == 200 and got == body
    conn.close()
