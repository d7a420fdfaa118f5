"""The VolumeDriver endpoints through flask's test client, as dockerd calls them: POST, no
Content-Type, sometimes an empty body."""

from __future__ import annotations

import json

import pytest

from plugin.app import MAX_BODY, create_app


@pytest.fixture
def app(rig):
    return create_app(rig.manager).test_client()


def post(app, endpoint: str, body: object = None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    response = app.post(endpoint, data=data,
                        headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
    assert response.request.headers.get("Content-Type") is None  # as dockerd sends it
    return response.status_code, response.get_json(force=True)


def test_activate_with_an_empty_body(app):
    assert post(app, "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})


def test_capabilities_scope_is_global(app):
    assert post(app, "/VolumeDriver.Capabilities") == (200, {"Capabilities": {"Scope": "global"}})


def test_create_with_null_opts(app, rig):
    assert post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": None}) == (200, {"Err": ""})
    assert rig.service.get("vm1", "db")["capacity_mb"] == 100


def test_create_with_opts(app, rig):
    status, reply = post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": {"size": "1gb"}})
    assert reply == {"Err": ""}
    assert rig.service.get("vm1", "db")["capacity_mb"] == 1024


def test_create_errors_are_err_with_the_services_message(app):
    status, reply = post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": {"size": "x"}})
    assert status == 500 and "invalid size 'x'" in reply["Err"]


@pytest.mark.parametrize("opts", [["size=1gb"], "size=1gb", 3])
def test_create_refuses_opts_that_are_not_a_map(app, rig, opts):
    status, reply = post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": opts})
    assert "Opts must be a map" in reply["Err"]
    assert rig.service.list("vm1") == []


@pytest.mark.parametrize("endpoint", ["/VolumeDriver.Create", "/VolumeDriver.Mount",
                                      "/VolumeDriver.Get", "/VolumeDriver.Remove"])
def test_malformed_json_is_an_err(app, endpoint):
    status, reply = post(app, endpoint, raw=b'{"Name": "db"')
    assert status == 500 and "not valid JSON" in reply["Err"]


def test_a_non_object_body_is_an_err(app):
    status, reply = post(app, "/VolumeDriver.Get", raw=b'["db"]')
    assert "must be a JSON object, got list" in reply["Err"]


@pytest.mark.parametrize("body", [{}, {"Name": ""}, {"Name": 7}])
def test_a_missing_or_bad_name_is_an_err(app, body):
    status, reply = post(app, "/VolumeDriver.Get", body)
    assert "invalid volume Name" in reply["Err"]


def test_mount_without_an_id_is_an_err(app, rig):
    rig.manager.create("db", {})
    status, reply = post(app, "/VolumeDriver.Mount", {"Name": "db"})
    assert "mount ID" in reply["Err"]
    assert rig.mounter.table == {}


def test_mount_path_unmount_remove(app, rig):
    post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": {}})
    target = rig.target("db@ds1")
    assert post(app, "/VolumeDriver.Mount", {"Name": "db", "ID": "m1"}) == (
        200, {"Mountpoint": target, "Err": ""})
    assert post(app, "/VolumeDriver.Path", {"Name": "db"}) == (
        200, {"Mountpoint": target, "Err": ""})

    status, reply = post(app, "/VolumeDriver.Remove", {"Name": "db"})
    assert "in use" in reply["Err"]

    assert post(app, "/VolumeDriver.Unmount", {"Name": "db", "ID": "m1"}) == (200, {"Err": ""})
    assert rig.mounter.table == {}
    assert post(app, "/VolumeDriver.Path", {"Name": "db"}) == (200, {"Mountpoint": "", "Err": ""})
    assert post(app, "/VolumeDriver.Remove", {"Name": "db"}) == (200, {"Err": ""})
    assert rig.service.list("vm1") == []


def test_get_answers_the_volume_with_status(app, rig):
    post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": {"size": "1gb"}})
    status, reply = post(app, "/VolumeDriver.Get", {"Name": "db"})
    assert status == 200 and reply["Err"] == ""
    assert reply["Volume"]["Name"] == "db"
    assert reply["Volume"]["Status"]["capacity"]["size"] == "1gb"
    assert reply["Volume"]["CreatedAt"]


def test_get_of_a_missing_volume_is_an_err(app):
    status, reply = post(app, "/VolumeDriver.Get", {"Name": "ghost"})
    assert "ghost@ds1 does not exist" in reply["Err"]


def test_get_and_list_answer_from_the_cache_while_the_service_is_down(app, rig):
    post(app, "/VolumeDriver.Create", {"Name": "db", "Opts": {}})
    rig.client.unreachable = True
    status, reply = post(app, "/VolumeDriver.Get", {"Name": "db"})
    assert status == 200 and reply["Err"] == "" and "stale" in reply["Volume"]["Status"]
    assert post(app, "/VolumeDriver.List", {}) == (200, {"Volumes": [{"Name": "db"}], "Err": ""})


def test_list_with_an_empty_body(app, rig):
    rig.manager.create("db", {})
    rig.manager.create("web", {})
    status, reply = post(app, "/VolumeDriver.List")
    assert status == 200
    assert reply == {"Volumes": [{"Name": "db"}, {"Name": "web"}], "Err": ""}


def test_remove_during_recovery_is_an_err(app, rig):
    rig.manager.create("db", {})
    rig.manager.recovered.clear()
    status, reply = post(app, "/VolumeDriver.Remove", {"Name": "db"})
    assert "recovering" in reply["Err"]
    assert rig.service.get("vm1", "db")


def test_an_unknown_endpoint_is_404_with_err(app):
    status, reply = post(app, "/VolumeDriver.Explode", {})
    assert status == 404 and reply["Err"]


def test_get_on_an_endpoint_is_405_with_err(app):
    response = app.get("/VolumeDriver.List")
    assert response.status_code == 405 and response.get_json()["Err"]


def test_an_oversized_body_is_refused(app):
    status, reply = post(app, "/VolumeDriver.Create", raw=b" " * (MAX_BODY + 1))
    assert status in (413, 500) and f"{MAX_BODY} bytes" in reply["Err"]


def test_an_unexpected_exception_is_500_without_a_traceback(app, rig):
    rig.manager.create("db", {})
    rig.mounter.fail["mkfs"] = RuntimeError("secret internals at 0xdeadbeef")
    status, reply = post(app, "/VolumeDriver.Mount", {"Name": "db", "ID": "m1"})
    assert status == 500
    assert "internal error on /VolumeDriver.Mount" in reply["Err"]
    assert "secret" not in reply["Err"] and "Traceback" not in reply["Err"]
    assert rig.backend.holder_of("db") is None  # and the attach was undone
