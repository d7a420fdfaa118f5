"""HttpEsxClient against a real UnixApiServer (and a TCP one) in-process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from esx_service.api import Api
from esx_service.server import ApiServer, UnixApiServer, _RequestHandler
from esx_service.volumes import VolumeService
from plugin.errors import ServiceError, ServiceUnreachable
from plugin.esx_client import HttpEsxClient, _readable
from tests.fakes import FakeBackend, one_shot_unix_server


def _serve(server) -> None:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def server(short_tmp, backend) -> Iterator[UnixApiServer]:
    srv = UnixApiServer(str(short_tmp / "esx.sock"), Api(VolumeService(backend)), "vm1")
    _serve(srv)
    yield srv
    srv.stop()


@pytest.fixture
def client(server) -> HttpEsxClient:
    return HttpEsxClient(f"unix://{server.server_address}", timeout=5)


def test_create_get_list_attach_detach_remove(client):
    view = client.create("db", {"size": "1gb"})
    assert view["name"] == "db@ds1" and view["capacity_mb"] == 1024
    assert client.get("db")["name"] == "db@ds1"
    assert [v["name"] for v in client.list()] == ["db@ds1"]
    answer = client.attach("db")
    assert answer["attach"]["kind"] == "loop" and answer["volume"]["attached_to"] == "vm1"
    assert client.detach("db")["status"] == "detached"
    assert client.remove("db") is None
    assert client.list() == []


def test_status_names_the_vm_the_client_is_seen_as(client):
    assert client.status()["vm"] == "vm1"


def test_names_with_at_and_datastore_are_quoted_into_the_path(client):
    client.create("db@DS2", {})
    assert client.get("db@ds2")["datastore"] == "ds2"
    assert client.attach("db@ds2")["volume"]["name"] == "db@ds2"


def test_a_name_with_a_slash_cannot_escape_the_route(client):
    with pytest.raises(ServiceError) as err:
        client.get("../status")
    assert err.value.code == "InvalidName"


def test_service_errors_keep_code_message_and_status(client):
    with pytest.raises(ServiceError) as err:
        client.get("ghost")
    assert (err.value.code, err.value.status) == ("VolumeNotFound", 404)
    assert "ghost@ds1" in err.value.message

    with pytest.raises(ServiceError) as err:
        client.create("x", {"fstype": "zfs"})
    assert (err.value.code, err.value.status) == ("InvalidOption", 400)


def test_in_use_errors_name_the_holder(short_tmp, backend, client):
    client.create("db", {})
    client.attach("db")
    other = UnixApiServer(str(short_tmp / "vm2.sock"), Api(VolumeService(backend)), "vm2")
    _serve(other)
    try:
        with pytest.raises(ServiceError) as err:
            HttpEsxClient(f"unix://{other.server_address}").attach("db")
    finally:
        other.stop()
    assert err.value.code == "VolumeInUse" and "vm1" in err.value.message


def test_a_missing_socket_is_unreachable(short_tmp):
    client = HttpEsxClient(f"unix://{short_tmp}/nobody.sock", timeout=2)
    with pytest.raises(ServiceUnreachable) as err:
        client.list()
    assert "nobody.sock" in err.value.message and "GET /v1/volumes" in err.value.message


def test_a_socket_nobody_listens_on_is_connection_refused(short_tmp):
    path = str(short_tmp / "dead.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    with pytest.raises(ServiceUnreachable, match="refused"):
        HttpEsxClient(f"unix://{path}", timeout=2).get("db")


def test_a_non_json_answer_is_unreachable(short_tmp):
    path = str(short_tmp / "weird.sock")
    one_shot_unix_server(path, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\nnot json!")
    with pytest.raises(ServiceUnreachable, match="non-JSON .*HTTP 502"):
        HttpEsxClient(f"unix://{path}", timeout=2).list()


def test_a_silent_service_times_out_as_unreachable(short_tmp):
    path = str(short_tmp / "silent.sock")
    one_shot_unix_server(path, None)
    with pytest.raises(ServiceUnreachable, match="timed out"):
        HttpEsxClient(f"unix://{path}", timeout=5).get("db", timeout=0.2)


def test_an_error_status_without_an_error_body_still_raises(short_tmp):
    path = str(short_tmp / "bare.sock")
    one_shot_unix_server(path, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(ServiceError) as err:
        HttpEsxClient(f"unix://{path}", timeout=2).list()
    assert (err.value.code, err.value.status) == ("InternalError", 503)


class _TcpApiServer(ApiServer):
    def __init__(self, api: Api) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _RequestHandler)

    def caller_vm(self, connection: socket.socket) -> str:
        return "tcp-vm"

    def describe(self) -> str:
        return "tcp"


def test_http_addresses_speak_tcp(backend):
    server = _TcpApiServer(Api(VolumeService(backend)))
    _serve(server)
    try:
        client = HttpEsxClient(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
        assert client.status()["vm"] == "tcp-vm"
        assert client.create("db", {})["created_by"] == "tcp-vm"
    finally:
        server.shutdown()
        server.server_close()


def test_reads_and_changes_reuse_one_connection_per_thread(client, server):
    accepted = []
    real = server.get_request

    def counting():  # every accept() the server makes
        got = real()
        accepted.append(got)
        return got

    server.get_request = counting
    client.create("db", {})
    for _ in range(5):
        client.get("db")
        client.list()
    client.status()
    client.attach("db")
    client.detach("db")
    client.remove("db")
    assert len(accepted) == 1  # one kept-alive connection for 4 changes and 11 reads


def test_a_read_after_the_service_restarted_reconnects_once(short_tmp, backend):
    path = str(short_tmp / "esx2.sock")
    first = UnixApiServer(path, Api(VolumeService(backend)), "vm1")
    _serve(first)
    client = HttpEsxClient(f"unix://{path}", timeout=5)
    client.create("db", {})
    assert client.get("db")["name"] == "db@ds1"  # keeps its connection open
    first.stop()  # closes the listening socket and, with it, what it served
    kept = client._kept.conn
    kept.sock.shutdown(socket.SHUT_RDWR)  # as the old process's exit would
    second = UnixApiServer(path, Api(VolumeService(backend)), "vm1")
    _serve(second)
    try:
        assert client.get("db")["name"] == "db@ds1"
    finally:
        second.stop()


def test_a_read_with_the_service_down_is_unreachable(short_tmp, backend):
    path = str(short_tmp / "esx3.sock")
    srv = UnixApiServer(path, Api(VolumeService(backend)), "vm1")
    _serve(srv)
    client = HttpEsxClient(f"unix://{path}", timeout=5)
    client.status()
    srv.stop()
    client._kept.conn.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(ServiceUnreachable):
        client.status()


def test_a_list_answer_that_did_not_change_is_not_parsed_again(client, monkeypatch):
    client.create("db", {})
    first = client.list()
    parsed = []
    real = json.loads
    monkeypatch.setattr("plugin.esx_client.json.loads",
                        lambda raw, *a, **k: (parsed.append(raw), real(raw, *a, **k))[1])
    assert client.list() is first  # the same bytes: the same parsed answer
    client.create("logs", {})
    assert [v["volume"] for v in client.list()] == ["db", "logs"]
    # (the service in this process parses its requests with the same json module)
    assert len([raw for raw in parsed if isinstance(raw, bytes) and b'"volumes"' in raw]) == 1


def _raw_server(path: str, answers: list[bytes | None]) -> tuple[socket.socket, list[bytes]]:
    """On the first connection, read a request per entry of ``answers`` and write it, or,
    for None, close the connection without answering; on any later one, answer every
    request with ``_OK``. Returns the listener and the requests read, on any connection."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    seen: list[bytes] = []

    def serve(conn: socket.socket, plan: list[bytes | None] | None) -> None:
        with conn:
            while plan is None or plan:
                got = conn.recv(65536)
                if not got:
                    return
                seen.append(got)
                answer = _OK if plan is None else plan.pop(0)
                if answer is None:
                    return
                conn.sendall(answer)

    def run() -> None:
        plan: list[bytes | None] | None = list(answers)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the test closed the listener
            threading.Thread(target=serve, args=(conn, plan), daemon=True).start()
            plan = None

    threading.Thread(target=run, daemon=True).start()
    return listener, seen


_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_a_change_met_by_a_dropped_kept_connection_is_never_sent_twice(short_tmp):
    """The service read the change and died before answering: the request may have taken
    effect, so the plugin says so instead of sending it again on a new connection (a read
    is sent again: the last status below)."""
    path = str(short_tmp / "drop.sock")
    listener, seen = _raw_server(path, [_OK, None])
    try:
        client = HttpEsxClient(f"unix://{path}", timeout=5)
        client.status()  # a kept connection that looks alive
        with pytest.raises(ServiceUnreachable, match="attach"):
            client.attach("db")
        client.status()
        assert [r.split(b" ", 2)[:2] for r in seen] == [
            [b"GET", b"/v1/status"], [b"POST", b"/v1/volumes/db/attach"],
            [b"GET", b"/v1/status"]]
    finally:
        listener.close()


def test_a_change_after_the_service_closed_the_kept_connection_goes_on_a_new_one(
        client, server, backend):
    client.status()
    kept = client._kept.conn
    server.shutdown()
    server.drain(2)  # closes the idle connections it served, as a restart would
    server.server_close()
    deadline = time.monotonic() + 5
    while not _readable(kept.sock) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = UnixApiServer(server.server_address, Api(VolumeService(backend)), "vm1")
    _serve(second)
    try:
        assert client.create("db", {})["name"] == "db@ds1"
        assert client._kept.conn is not kept
        assert [v["volume"] for v in client.list()] == ["db"]  # made exactly once
    finally:
        second.stop()


def test_a_change_after_a_long_idle_goes_on_a_new_connection(client, server, monkeypatch):
    accepted = []
    real = server.get_request
    server.get_request = lambda: (accepted.append(1), real())[1]
    client.status()
    monkeypatch.setattr("plugin.esx_client.KEEP_IDLE", 0.0)
    client.create("db", {})
    assert len(accepted) == 2
