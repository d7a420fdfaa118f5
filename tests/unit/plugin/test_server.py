"""plugin/server.py: the plugin's WSGI app on the lean HTTP server, over a real unix socket."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvols_common.http_client import UnixHTTPConnection
from plugin.app import create_app
from plugin.server import PluginServer

REPO = Path(__file__).resolve().parents[3]


def _app(environ, start_response):
    """A VolumeDriver-like app: /slow waits until released, /crash raises, else echoes."""
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if path == "/slow":
        RELEASE.wait(10)
    if path == "/crash":
        raise RuntimeError("boom")
    data = json.dumps({"path": path, "body": body.decode(), "Err": "",
                       "accept": environ.get("HTTP_ACCEPT", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


RELEASE = threading.Event()


@pytest.fixture
def server(short_tmp) -> Iterator[PluginServer]:
    RELEASE.clear()
    started = PluginServer(str(short_tmp / "p.sock"), _app)
    threading.Thread(target=started.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    yield started
    RELEASE.set()
    started.stop(5.0)


def _post(conn: UnixHTTPConnection, path: str, body: bytes = b"{}") -> tuple[int, dict]:
    conn.request("POST", path, body=body,
                 headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_a_request_reaches_the_wsgi_app_with_its_body_and_headers(server):
    conn = UnixHTTPConnection(server.server_address, 5)
    status, reply = _post(conn, "/VolumeDriver.Get", b'{"Name": "db"}')
    assert status == 200
    assert reply == {"path": "/VolumeDriver.Get", "body": '{"Name": "db"}', "Err": "",
                     "accept": "application/vnd.docker.plugins.v1.2+json"}
    conn.close()


def test_one_kept_alive_connection_serves_many_requests(server):
    conn = UnixHTTPConnection(server.server_address, 5)
    for i in range(20):
        assert _post(conn, f"/r{i}")[1]["path"] == f"/r{i}"
    sock = conn.sock
    assert _post(conn, "/last")[0] == 200 and conn.sock is sock  # never reconnected
    conn.close()


def test_a_slow_request_does_not_hold_up_another_connection(server):
    slow = UnixHTTPConnection(server.server_address, 15)
    answered: list = []
    waiter = threading.Thread(target=lambda: answered.append(_post(slow, "/slow")))
    waiter.start()
    time.sleep(0.2)  # the slow request is in the app now
    fast = UnixHTTPConnection(server.server_address, 5)
    for _ in range(5):
        assert _post(fast, "/fast")[0] == 200
    assert not answered  # the slow one is still waiting, the fast ones were served
    RELEASE.set()
    waiter.join(5)
    assert answered and answered[0][0] == 200
    fast.close()
    slow.close()


def test_an_exception_in_the_app_answers_500_with_the_err_envelope_and_serving_goes_on(
        server, caplog):
    conn = UnixHTTPConnection(server.server_address, 5)
    status, reply = _post(conn, "/crash")
    assert status == 500
    assert reply == {"Err": "dockvols plugin internal error on /crash: RuntimeError; "
                            "see the plugin log"}
    assert "boom" in caplog.text  # the traceback goes to the log, not to dockerd
    assert _post(conn, "/after")[0] == 200  # same connection, still served
    conn.close()


def test_a_chunked_body_is_read_whole(server):
    conn = UnixHTTPConnection(server.server_address, 5)
    conn.request("POST", "/VolumeDriver.Create", body=iter([b'{"Name"', b': "db"}']),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    assert json.loads(conn.getresponse().read())["body"] == '{"Name": "db"}'
    conn.close()


def test_a_body_over_the_limit_is_refused_in_the_err_envelope(server):
    conn = UnixHTTPConnection(server.server_address, 5)
    conn.putrequest("POST", "/VolumeDriver.Create")
    conn.putheader("Content-Length", str(10 * 1024 * 1024))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert "byte limit" in json.loads(response.read())["Err"]
    conn.close()


def test_a_malformed_request_line_is_refused_in_the_err_envelope(server):
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(server.server_address)
    client.sendall(b"GARBAGE\r\n\r\n")
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    client.close()
    head, body = answer.decode().split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 400 ") and "Connection: close" in head
    assert "GARBAGE" in json.loads(body)["Err"]


def test_the_socket_is_owner_and_group_only_and_goes_with_the_server(short_tmp):
    path = str(short_tmp / "q.sock")
    Path(path).write_text("stale")  # a file left by a killed run is replaced
    server = PluginServer(path, _app)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    server.start()
    server.stop(1.0)
    assert not os.path.exists(path)


def test_the_flask_app_is_served_too(short_tmp, rig):
    server = PluginServer(str(short_tmp / "f.sock"), create_app(rig.manager))
    server.start()
    try:
        conn = UnixHTTPConnection(server.server_address, 5)
        assert _post(conn, "/Plugin.Activate")[1] == {"Implements": ["VolumeDriver"]}
        conn.request("GET", "/nowhere")
        response = conn.getresponse()
        assert response.status == 404 and "Err" in json.loads(response.read())
        conn.close()
    finally:
        server.stop(1.0)


CHILD = """
import sys, threading, time
from plugin.server import PluginServer, serve_until_stopped

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        print("in flight", flush=True)
        time.sleep(1.0)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"Err": ""}']

drained = serve_until_stopped(PluginServer(sys.argv[1], app), 10.0)
print("drained" if drained else "not drained", flush=True)
"""


def test_sigterm_finishes_the_request_in_flight_then_removes_the_socket(short_tmp):
    path = str(short_tmp / "t.sock")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        idle = UnixHTTPConnection(path, 5)  # a kept-alive connection with nothing in flight
        assert _post(idle, "/fast")[0] == 200
        slow = UnixHTTPConnection(path, 10)
        answered: list = []
        waiter = threading.Thread(target=lambda: answered.append(_post(slow, "/slow")))
        waiter.start()
        assert proc.stdout is not None and proc.stdout.readline() == "in flight\n"
        proc.send_signal(signal.SIGTERM)
        waiter.join(10)
        assert answered == [(200, {"Err": ""})]  # the request in flight finished
        assert proc.wait(10) == 0
        assert proc.stdout.read() == "drained\n"
        assert not os.path.exists(path)
        with pytest.raises((OSError, http.client.HTTPException)):
            _post(idle, "/fast")  # the idle connection was closed, not left hanging
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
