"""Property-based fuzzing of every esx_service API route: malformed JSON, wrong types, huge
bodies and odd names always get a clear error with a stable code, never a 5xx, and no file
appears outside the datastore folders."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esx_service.api import Api, Text
from esx_service.backends.local import LocalBackend
from esx_service.errors import ALL_ERRORS
from esx_service.file_names import file_stem
from esx_service.server import UnixApiServer
from esx_service.volumes import VolumeService
from tests.fakes import FakeBackend, FakeLosetup

EXAMPLES = 400

odd_names = st.one_of(
    st.text(min_size=0, max_size=300),
    # hypothesis's text never holds a lone surrogate; a JSON body can ("\ud800")
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
            max_size=3),
    st.sampled_from(["../x", "..", ".", "a/../../etc", "x\x00y", "/etc/passwd", "a@", "@b",
                     "a@b@c", "a@../../x", "é", "\u202e", "x" * 10_000, "db-000001",
                     "db-flat", "a\\b", "a b", "CON", "db@DATASTORE1"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=4),
    max_leaves=10)
option_maps = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["size", "diskformat", "fstype", "access", "attach-as",
                                     "clone-from", "vsan-policy-name", "colour", ""]),
                    st.one_of(st.text(max_size=30), st.integers(), st.none(),
                              st.sampled_from(["9" * 5000 + "gb", "1" * 4301 + "mb",
                                               "0" * 5000 + "1mb", "\ud800mb"])),
                    max_size=4),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n, o: json.dumps({"name": n, "opts": o}).encode(), odd_names, option_maps),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b"{" * 5000),
    st.just(b"[" * 5000),
    st.just(json.dumps({"name": "big", "opts": {"size": "1" * 70_000}}).encode()),
)
paths = st.one_of(
    st.sampled_from(["/v1/volumes", "/v1/datastores", "/v1/status", "/", "/v2/volumes",
                     "/v1/volumes/", "/v1/volumes//attach", "/v1/admin/vmgroups"]),
    odd_names.map(lambda n: f"/v1/volumes/{n}"),
    st.tuples(odd_names, st.sampled_from(["attach", "detach", "formatted", "x", ""])).map(
        lambda t: f"/v1/volumes/{t[0]}/{t[1]}"),
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"])


def outside_files(root: Path, allowed: list[Path]) -> list[str]:
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            if not any(path.is_relative_to(a) for a in allowed):
                found.append(str(path))
    return found


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, path=paths, body=bodies)
def test_every_route_answers_bad_input_with_a_stable_error(
        tmp_path: Path, method: str, path: str, body: bytes) -> None:
    datastores = {"datastore1": tmp_path / "ds" / "datastore1", "ds2": tmp_path / "ds" / "ds2"}
    backend = LocalBackend({k: str(v) for k, v in datastores.items()}, run=FakeLosetup())
    api = Api(VolumeService(backend, "datastore1"))
    status, reply = api.handle(method, path, body, "fuzz-vm")
    assert status < 500, (status, reply)
    if status >= 400:
        assert reply["error"]["code"] in ALL_ERRORS
        assert reply["error"]["message"]
        assert "Traceback" not in reply["error"]["message"]
    # always serialisable (List answers JSON it encoded itself)
    json.loads(reply.body) if isinstance(reply, Text) else json.dumps(reply)
    assert outside_files(tmp_path, list(datastores.values())) == []


@settings(max_examples=EXAMPLES // 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=odd_names, opts=option_maps)
def test_create_then_remove_of_any_name_is_whole_or_absent(
        tmp_path: Path, name: str, opts: object) -> None:
    root = tmp_path / "ds"
    backend = LocalBackend({"datastore1": str(root / "datastore1")}, run=FakeLosetup())
    api = Api(VolumeService(backend, "datastore1"))
    body = json.dumps({"name": name, "opts": opts}).encode()
    status, reply = api.handle("POST", "/v1/volumes", body, "fuzz-vm")
    files = sorted(p.name for p in root.rglob("*") if p.is_file())
    if status == 201:
        assert reply["volume"]["volume"] == name.rpartition("@")[0] or name
        stem = file_stem(reply["volume"]["volume"])
        assert files == sorted([f"{stem}.json", f"{stem}.vmdk", f"{stem}-flat.vmdk"])
        assert api.handle("DELETE", f"/v1/volumes/{quote(reply['volume']['name'], safe='')}",
                          b"", "fuzz-vm")[0] == 200
        assert backend._trash.wait_empty(5)  # the extent is freed after the answer
        assert [p for p in root.rglob("*") if p.is_file()] == []
    else:
        assert status < 500, reply
        assert files == []  # refused: nothing made


http_methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD",
                                          "OPTIONS", "TRACE", "CONNECT", "PROPFIND"]),
                         st.from_regex(r"[A-Z]{1,12}", fullmatch=True))
request_lines = st.one_of(
    st.builds(lambda m, p: f"{m} {p} HTTP/1.1", http_methods,
              st.sampled_from(["/v1/status", "/v1/volumes", "/v1/volumes/db", "/", "*"])),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
    st.sampled_from(["GET /v1/status HTTP/9.9", "GET", "", "GET /v1/status HTTP/1.1 extra",
                     "GET /" + "a" * 70_000 + " HTTP/1.1"]),
)


def _exchange(path: str, head: bytes) -> bytes:
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(path)
    chunks = []
    try:
        client.sendall(head)
        client.shutdown(socket.SHUT_WR)
        while chunk := client.recv(65536):
            chunks.append(chunk)
    finally:
        client.close()
    return b"".join(chunks)


@settings(max_examples=EXAMPLES // 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=request_lines)
def test_every_answer_on_the_socket_is_json_in_the_error_shape(short_tmp: Path,
                                                              line: str) -> None:
    """Whatever the request line (unknown methods, garbage, HTTP/9.9), the socket answers
    JSON with a status below 500: never http.server's HTML page."""
    path = str(short_tmp / "f.sock")
    server = UnixApiServer(path, Api(VolumeService(FakeBackend())), "fuzz-vm")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    try:
        answer = _exchange(path, f"{line}\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    finally:
        server.stop()
    if not answer:
        return  # an empty line: http.server closes without answering
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):  # an HTTP/0.9 request is answered body only
        head, body = b"HTTP/1.1 200", answer
    status = int(head.split()[1])
    assert status < 500, answer[:300]
    if line.startswith("HEAD "):
        assert body == b""  # HTTP: a HEAD answer has headers only
        return
    reply = json.loads(body)
    if status >= 400:
        assert reply["error"]["code"] in ALL_ERRORS, reply
        assert "internal error" not in reply["error"]["message"]
