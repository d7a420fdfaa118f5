"""dockvols_common/http_server.py over a real unix socket, spoken to byte by byte: framing,
keep-alive and the refusals both halves build on (their own shapes are tested with them:
tests/unit/plugin/test_server.py, tests/unit/esx_service/test_server.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from dockvols_common.http_server import HttpHandler, Request, Response, UnixHttpServer


class _Echo(HttpHandler):
    max_body = 1000

    def answer(self, request: Request) -> Response:
        return Response(200, f"{request.method} {request.target} {request.version} "
                             f"{request.body.decode()}".encode(), "text/plain")


@pytest.fixture
def sock_path(short_tmp) -> Iterator[str]:
    server = UnixHttpServer(str(short_tmp / "e.sock"), _Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    yield str(server.server_address)
    server.shutdown()
    server.server_close()


def _talk(path: str, data: bytes, answers: int = 1) -> list[bytes]:
    """Send ``data``; read until ``answers`` answers are complete or the server closes."""
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(path)
    client.sendall(data)
    buf, got = b"", []
    try:
        while len(got) < answers:
            while b"\r\n\r\n" not in buf:
                chunk = client.recv(65536)
                if not chunk:
                    return got + ([buf] if buf else [])
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = int(next((h.split(b":")[1] for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length")), b"0"))
            while len(buf) < length:
                buf += client.recv(65536)
            got.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
        return got
    finally:
        client.close()


def test_pipelined_requests_on_one_connection_are_answered_in_order(sock_path):
    got = _talk(sock_path, b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /b HTTP/1.1"
                           b"\r\nContent-Length: 3\r\n\r\ntwo\r\nGET /c?x=1 HTTP/1.1\r\n\r\n", 3)
    assert [g.split(b"\r\n\r\n")[1] for g in got] == [
        b"POST /a HTTP/1.1 one", b"POST /b HTTP/1.1 two", b"GET /c?x=1 HTTP/1.1 "]
    assert all(b"Connection: close" not in g for g in got)


def test_connection_close_and_http_1_0_close_after_the_answer(sock_path):
    got = _talk(sock_path, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
                2)
    assert len(got) == 1 and b"Connection: close" in got[0]
    got = _talk(sock_path, b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 2)
    assert len(got) == 1 and got[0].endswith(b"GET /a HTTP/1.0 ")


def test_expect_100_continue_is_answered_before_the_body_is_read(sock_path):
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(sock_path)
    client.sendall(b"POST /a HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(b"body")
    assert client.recv(1000).endswith(b"POST /a HTTP/1.1 body")
    client.close()


@pytest.mark.parametrize("data,status", [
    (b"POST /a HTTP/1.1\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n", b"413"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024, b"413"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
    (b"GET /a HTTP/1.1\r\n Folded: header\r\n\r\n", b"400"),
    (b"GET /a HTTP/1.1\r\nNo colon here\r\n\r\n", b"400"),
    (b"GET /a\r\n\r\n", b"400"),
    (b"GET /a HTTP/2.0\r\n\r\n", b"505"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET /a HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"431"),
])
def test_a_refused_request_gets_its_status_and_the_connection_closes(sock_path, data, status):
    got = _talk(sock_path, data + b"GET /after HTTP/1.1\r\n\r\n", 2)
    assert len(got) == 1  # nothing after the refusal is served
    assert got[0].split(b" ")[1] == status and b"Connection: close" in got[0]
    assert b"100 Continue" not in got[0]  # a body it would refuse is never asked for


def test_a_drain_waits_until_the_answer_in_flight_is_written(short_tmp, monkeypatch):
    """A request leaves the in-flight set only once its answer is written: a drain that
    returned before let the plugin exit on SIGTERM with the answer unsent."""
    writing, release = threading.Event(), threading.Event()
    real_send = _Echo._send

    def slow_send(self, response, close):  # type: ignore[no-untyped-def]
        writing.set()
        release.wait(5)
        real_send(self, response, close)
    monkeypatch.setattr(_Echo, "_send", slow_send)
    server = UnixHttpServer(str(short_tmp / "d.sock"), _Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    answers: list[list[bytes]] = []
    client = threading.Thread(target=lambda: answers.append(_talk(
        str(server.server_address), b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")))
    client.start()
    try:
        assert writing.wait(5)
        server.shutdown()
        drained: list[bool] = []
        drainer = threading.Thread(target=lambda: drained.append(server.drain(5)))
        drainer.start()
        drainer.join(0.3)
        assert drained == []  # the answer is not written yet: still in flight
        release.set()
        drainer.join(5)
        client.join(5)
        assert drained == [True]
        assert len(answers[0]) == 1 and answers[0][0].startswith(b"HTTP/1.1 200")
    finally:
        release.set()
        server.server_close()
