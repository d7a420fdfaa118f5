"""UnixApiServer on a short unix socket path, spoken to with http.client."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator

import pytest

from dockvols_common.http_client import UnixHTTPConnection
from esx_service.api import MAX_BODY, Api
from esx_service.server import UnixApiServer
from esx_service.volumes import VolumeService
from tests.fakes import FakeBackend


def request(path: str, method: str, url: str, body: object = None,
            raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    conn = UnixHTTPConnection(path, 5)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        conn.request(method, url, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture
def service() -> VolumeService:
    return VolumeService(FakeBackend())


def serve_fast(server: UnixApiServer) -> None:
    """Like server.start(), polling often so stop() returns at once (keeps the suite fast)."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()


@pytest.fixture
def servers(short_tmp, service) -> Iterator[dict[str, UnixApiServer]]:
    api = Api(service)
    started = {vm: UnixApiServer(str(short_tmp / f"{vm}.sock"), api, vm) for vm in ("vm1", "vm2")}
    for server in started.values():
        serve_fast(server)
    yield started
    for server in started.values():
        server.stop()


def sock(servers, vm: str) -> str:
    return servers[vm].server_address


def test_the_server_answers_json_with_the_vm_bound_to_its_socket(servers):
    status, reply, headers = request(sock(servers, "vm2"), "GET", "/v1/status")
    assert status == 200 and reply["vm"] == "vm2"
    assert headers["Content-Type"] == "application/json"


def test_a_volume_round_trip_over_the_socket(servers):
    path = sock(servers, "vm1")
    status, reply, _ = request(path, "POST", "/v1/volumes", {"name": "db", "opts": {}})
    assert status == 201 and reply["volume"]["name"] == "db@ds1"
    status, reply, _ = request(path, "POST", "/v1/volumes/db/attach", {})
    assert status == 200 and reply["volume"]["attached_to"] == "vm1"
    status, reply, _ = request(path, "GET", "/v1/volumes/db")
    assert reply["volume"]["status"] == "attached"


def test_each_socket_is_a_different_caller(servers):
    request(sock(servers, "vm1"), "POST", "/v1/volumes", {"name": "db"})
    request(sock(servers, "vm1"), "POST", "/v1/volumes/db/attach", {})
    status, reply, _ = request(sock(servers, "vm2"), "POST", "/v1/volumes/db/attach", {})
    assert status == 409 and reply["error"]["code"] == "VolumeInUse"
    assert "vm1" in reply["error"]["message"]


def test_errors_keep_their_status_over_the_socket(servers):
    status, reply, _ = request(sock(servers, "vm1"), "GET", "/v1/volumes/ghost")
    assert status == 404 and reply["error"]["code"] == "VolumeNotFound"
    status, reply, _ = request(sock(servers, "vm1"), "POST", "/v1/volumes", raw=b"{oops",
                               headers={"Content-Type": "application/json"})
    assert status == 400 and reply["error"]["code"] == "BadRequest"


def raw_exchange(path: str, head: str) -> str:
    """Send request headers only; read the answer until the server closes."""
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(path)
    chunks = []
    try:
        client.sendall(head.encode())
        while chunk := client.recv(65536):
            chunks.append(chunk)
    finally:
        client.close()
    return b"".join(chunks).decode()


def test_an_oversized_body_is_refused_with_413_before_it_is_read(servers):
    answer = raw_exchange(sock(servers, "vm1"), "POST /v1/volumes HTTP/1.1\r\nHost: x\r\n"
                                                f"Content-Length: {MAX_BODY + 1}\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413 ")
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["code"] == "BadRequest"


def test_keep_alive_serves_several_requests_on_one_connection(servers):
    conn = UnixHTTPConnection(sock(servers, "vm1"), 5)
    try:
        for _ in range(3):
            conn.request("GET", "/v1/status")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["vm"] == "vm1"
    finally:
        conn.close()


def test_the_socket_is_group_accessible_only(servers):
    mode = stat.S_IMODE(os.stat(sock(servers, "vm1")).st_mode)
    assert mode == 0o660


def test_a_stale_socket_file_is_replaced(short_tmp, service):
    path = str(short_tmp / "esx.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    server = UnixApiServer(path, Api(service), "vm1")
    serve_fast(server)
    try:
        assert request(path, "GET", "/v1/status")[0] == 200
    finally:
        server.stop()


def test_start_serves_and_stop_removes_the_socket_and_refuses_connections(short_tmp, service):
    path = str(short_tmp / "sub" / "esx.sock")  # the directory is created too
    server = UnixApiServer(path, Api(service), "vm1")
    assert server.start().daemon
    assert request(path, "GET", "/v1/status")[0] == 200
    server.stop()
    assert not os.path.exists(path)
    with pytest.raises(OSError):
        request(path, "GET", "/v1/status")


@pytest.mark.parametrize("length", ["-1", "abc"])
def test_a_bad_content_length_is_refused_without_waiting_for_a_body(servers, length):
    answer = raw_exchange(sock(servers, "vm1"), "POST /v1/volumes HTTP/1.1\r\nHost: x\r\n"
                                                f"Content-Length: {length}\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413 ")
    body = json.loads(answer.split("\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "BadRequest" and repr(length) in body["error"]["message"]


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "FOO", "TRACE"])
def test_an_unknown_http_method_gets_a_json_405_naming_the_allowed_ones(servers, method):
    answer = raw_exchange(sock(servers, "vm1"), f"{method} /v1/volumes HTTP/1.1\r\nHost: x\r\n"
                                                "Content-Length: 0\r\n\r\n")
    head, body = answer.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 405 ")
    assert "Content-Type: application/json" in head and "Allow: GET, POST, PUT, DELETE" in head
    error = json.loads(body)["error"]
    assert error["code"] == "MethodNotAllowed"
    assert method in error["message"] and "GET, POST, PUT, DELETE" in error["message"]


def test_head_gets_a_405_without_a_body(servers):
    answer = raw_exchange(sock(servers, "vm1"), "HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = answer.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 405 ") and body == ""


@pytest.mark.parametrize("head", [
    "GARBAGE\r\n\r\n",
    "GET /v1/status HTTP/9.9\r\n\r\n",
    "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 70000 + "\r\n\r\n",
    "GET /" + "a" * 70000 + " HTTP/1.1\r\n\r\n",
])
def test_malformed_requests_get_a_json_error_not_an_html_page(servers, head):
    answer = raw_exchange(sock(servers, "vm1"), head)
    status_line, body = answer.split("\r\n\r\n", 1)
    status = int(status_line.split()[1])
    assert 400 <= status < 500
    error = json.loads(body)["error"]
    assert error["code"] == "BadRequest" and error["message"]
