"""AdminApi as a function of (method, path, body), and the tables the CLI prints."""

from __future__ import annotations

import pytest

from esx_service.admin.tables import format_table, parse_columns
from esx_service.api import Api


def test_the_vm_facing_api_serves_no_admin_route(stack) -> None:
    status, reply = Api(stack.service).handle("GET", "/v1/admin/vmgroups", b"", "vm1")
    assert status == 404 and reply["error"]["code"] == "NotFound"
    status, _ = Api(stack.service).handle("DELETE", "/v1/admin/vmgroups/_DEFAULT", b"", "vm1")
    assert status == 404


def test_unknown_admin_paths_are_not_found(stack) -> None:
    assert stack.admin.handle("GET", "/v1/volumes", b"", "admin")[0] == 404
    status, reply = stack.admin.handle("PATCH", "/v1/admin/vmgroups", b"", "admin")
    assert (status, reply["error"]["message"]) == (
        404, "no admin route for PATCH /v1/admin/vmgroups")
    assert stack.admin.handle("GET", "/v1/admin/vmgroups//vms", b"", "admin")[0] == 404


def test_a_body_that_is_not_a_json_object_is_a_bad_request(stack) -> None:
    status, reply = stack.admin.handle("POST", "/v1/admin/vmgroups", b"[1]", "admin")
    assert (status, reply["error"]["code"]) == (400, "BadRequest")
    status, reply = stack.admin.handle("POST", "/v1/admin/vmgroups/_DEFAULT/access",
                                       b'{"datastore": "ds1", "allow_create": "yes"}', "admin")
    assert reply["error"]["message"] == "allow_create must be true or false, got 'yes'"


def test_an_internal_error_is_logged_and_answered_without_its_traceback(
        stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(stack.db, "vmgroups", broken)
    status, reply = stack.admin.handle("GET", "/v1/admin/vmgroups", b"", "admin")
    assert status == 500
    assert "secret detail" not in str(reply)
    assert "secret detail" in caplog.text


def test_percent_encoded_names_reach_the_routes(stack) -> None:
    stack.db.create_vmgroup("g1")
    status, reply = stack.admin.handle("POST", "/v1/admin/vmgroups/g1/vms",
                                       b'{"vms": ["web server/1"]}', "admin")
    assert status == 200
    status, _ = stack.admin.handle("DELETE", "/v1/admin/vmgroups/g1/vms/web%20server%2F1", b"",
                                   "admin")
    assert status == 200 and stack.db.vmgroup("g1").vms == ()


def test_tables_align_columns_without_trailing_blanks() -> None:
    assert format_table(["A", "Long header"], [["xyz", ""], ["", "v"]]).splitlines() == [
        "A    Long header", "---  -----------", "xyz", "     v"]


def test_columns_are_named_case_and_dash_insensitively() -> None:
    assert [h for h, _ in parse_columns("Volume, disk_format,ATTACHED-TO")] == [
        "Volume", "Disk Format", "Attached To"]
    with pytest.raises(ValueError, match="unknown column ','"):
        parse_columns(",")
