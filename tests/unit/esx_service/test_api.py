"""api.Api as a pure function of (method, path, body, caller VM), on a real VolumeService
over FakeBackend."""

from __future__ import annotations

import json
import logging

import pytest

from esx_service import __version__
from esx_service.api import MAX_BODY, Api, Text
from esx_service.errors import BackendError, ServiceStopping
from esx_service.volumes import VolumeService
from tests.fakes import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def api(backend) -> Api:
    return Api(VolumeService(backend))


def call(api: Api, method: str, path: str, body: object = None, vm: str = "vm1",
         raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    status, reply = api.handle(method, path, data, vm)
    if isinstance(reply, Text):  # already encoded (List)
        return status, json.loads(reply.body)
    return status, json.loads(json.dumps(reply))  # only what survives the wire


def error_code(reply: dict) -> str:
    return reply["error"]["code"]


def test_status_names_version_backend_and_the_transports_vm(api):
    assert call(api, "GET", "/v1/status", vm="vm-7") == (
        200, {"version": __version__, "backend": "fake", "vm": "vm-7"})


def test_datastores_mark_the_default(api):
    status, reply = call(api, "GET", "/v1/datastores")
    assert status == 200
    assert [(d["name"], d["default"]) for d in reply["datastores"]] == [
        ("ds1", True), ("ds2", False)]
    assert reply["datastores"][0]["free_bytes"] > 0


def test_create_answers_201_with_the_volume(api):
    status, reply = call(api, "POST", "/v1/volumes", {"name": "db", "opts": {"size": "1gb"}})
    assert status == 201
    assert reply["volume"]["name"] == "db@ds1"
    assert reply["volume"]["capacity_mb"] == 1024


def test_create_with_null_opts_uses_the_defaults(api):
    status, reply = call(api, "POST", "/v1/volumes", {"name": "db", "opts": None})
    assert status == 201 and reply["volume"]["capacity_mb"] == 100


def test_list_get_attach_detach_remove(api):
    call(api, "POST", "/v1/volumes", {"name": "db"})
    status, reply = call(api, "GET", "/v1/volumes")
    assert status == 200 and [v["name"] for v in reply["volumes"]] == ["db@ds1"]

    status, reply = call(api, "GET", "/v1/volumes/db")
    assert status == 200 and reply["volume"]["status"] == "detached"

    status, reply = call(api, "POST", "/v1/volumes/db%40ds1/attach", {})
    assert status == 200
    assert reply["attach"]["kind"] == "loop" and reply["volume"]["attached_to"] == "vm1"

    status, reply = call(api, "POST", "/v1/volumes/db/detach", {})
    assert status == 200 and reply["volume"]["status"] == "detached"

    assert call(api, "DELETE", "/v1/volumes/db") == (200, {})
    assert call(api, "GET", "/v1/volumes") == (200, {"volumes": []})


def test_a_query_string_and_trailing_slash_are_ignored(api):
    call(api, "POST", "/v1/volumes", {"name": "db"})
    assert call(api, "GET", "/v1/volumes/db?verbose=1")[0] == 200
    assert call(api, "GET", "/v1/volumes/")[0] == 200


def test_the_caller_vm_comes_from_the_transport_not_the_body(api):
    call(api, "POST", "/v1/volumes", {"name": "db"})
    call(api, "POST", "/v1/volumes/db/attach", {"vm": "someone-else"}, vm="vm-a")
    status, reply = call(api, "POST", "/v1/volumes/db/attach", {"vm": "vm-a"}, vm="vm-b")
    assert status == 409 and "vm-a" in reply["error"]["message"]


@pytest.mark.parametrize("setup,request_args,status,code", [
    (None, ("GET", "/v1/volumes/ghost"), 404, "VolumeNotFound"),
    (None, ("GET", "/v1/volumes/a%2Fb"), 400, "InvalidName"),
    (None, ("POST", "/v1/volumes", {"name": "db", "opts": {"size": "big"}}), 400,
     "InvalidOption"),
    (None, ("POST", "/v1/volumes", {"name": "db@nowhere"}), 404, "UnknownDatastore"),
    (None, ("POST", "/v1/volumes", {"name": "db", "opts": {"size": "1tb"}}), 507,
     "InsufficientSpace"),
    ("attached", ("DELETE", "/v1/volumes/db"), 409, "VolumeInUse"),
    ("attached", ("POST", "/v1/volumes/db/attach", {}, "vm2"), 409, "VolumeInUse"),
])
def test_status_codes_per_error_code(api, setup, request_args, status, code):
    if setup == "attached":
        call(api, "POST", "/v1/volumes", {"name": "db"})
        call(api, "POST", "/v1/volumes/db/attach", {})
    got_status, reply = call(api, *request_args)
    assert (got_status, error_code(reply)) == (status, code)
    assert reply["error"]["message"]


def test_a_backend_failure_is_502(api, backend):
    backend.fail_before["create_disk"] = BackendError("vmkfstools failed")
    status, reply = call(api, "POST", "/v1/volumes", {"name": "db"})
    assert (status, error_code(reply)) == (502, "BackendError")
    assert "vmkfstools failed" in reply["error"]["message"]


def test_a_stopping_service_is_503(api):
    api.service.gate.drain(timeout=1.0)
    status, reply = call(api, "GET", "/v1/volumes")
    assert (status, error_code(reply)) == (503, ServiceStopping.code)


@pytest.mark.parametrize("raw,what", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'"db"', "must be a JSON object, got str"),
    (b"null", "must be a JSON object, got NoneType"),
])
def test_malformed_or_non_object_bodies_are_400(api, raw, what):
    status, reply = call(api, "POST", "/v1/volumes", raw=raw)
    assert (status, error_code(reply)) == (400, "BadRequest")
    assert what in reply["error"]["message"]


def test_an_oversized_body_is_400(api):
    raw = json.dumps({"name": "db", "pad": "x" * MAX_BODY}).encode()
    status, reply = call(api, "POST", "/v1/volumes", raw=raw)
    assert (status, error_code(reply)) == (400, "BadRequest")
    assert "limit" in reply["error"]["message"]


def test_an_empty_create_body_is_an_invalid_name(api):
    status, reply = call(api, "POST", "/v1/volumes", raw=b"")
    assert (status, error_code(reply)) == (400, "InvalidName")


@pytest.mark.parametrize("method,path", [
    ("GET", "/"), ("GET", "/v2/volumes"), ("GET", "/v1/nothing"), ("PUT", "/v1/volumes"),
    ("POST", "/v1/volumes/db/explode"), ("GET", "/v1/volumes/db/attach"),
    ("GET", "/v1/volumes/a/b/c/d"),
])
def test_unknown_routes_are_404(api, method, path):
    status, reply = call(api, method, path)
    assert (status, error_code(reply)) == (404, "NotFound")
    assert path.split("?")[0] in reply["error"]["message"] or "/v1/" in reply["error"]["message"]


def test_an_unexpected_exception_is_500_without_a_traceback(api, backend, caplog):
    backend.fail_before["list_metadata"] = RuntimeError("secret internals at 0xdeadbeef")
    caplog.set_level(logging.ERROR, logger="dockvols.api")
    status, reply = call(api, "GET", "/v1/volumes", vm="vm3")
    assert (status, error_code(reply)) == (500, "InternalError")
    text = json.dumps(reply)
    assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text
    assert "see the dockvols service log" in reply["error"]["message"]
    # the traceback goes to the log instead
    assert any(r.exc_info and "vm3" in r.getMessage() for r in caplog.records)


def test_resize_answers_the_grown_volume_and_refusals_with_their_codes(api):
    call(api, "POST", "/v1/volumes", {"name": "db", "opts": {"size": "100mb"}})
    status, reply = call(api, "POST", "/v1/volumes/db/resize", {"size": "200mb"})
    assert status == 200
    assert (reply["volume"]["capacity_mb"], reply["previous_capacity_mb"]) == (200, 100)
    status, reply = call(api, "POST", "/v1/volumes/db/resize", {"size": "100mb"})
    assert (status, error_code(reply)) == (400, "InvalidOption")
    assert "its size is 200mb" in reply["error"]["message"]
    status, reply = call(api, "POST", "/v1/volumes/db/resize", {})
    assert (status, error_code(reply)) == (400, "InvalidOption")
    status, reply = call(api, "POST", "/v1/volumes/ghost/resize", {"size": "1gb"})
    assert (status, error_code(reply)) == (404, "VolumeNotFound")
    status, reply = call(api, "POST", "/v1/volumes/db/resize", {"size": "1tb"})
    assert (status, error_code(reply)) == (507, "InsufficientSpace")
