"""The admin API's one client (admin/client.py), and how dockvols-admin words its failures,
against scripted answers on a unix socket and a real admin API (the ``stack`` fixture)."""

from __future__ import annotations

import os

import pytest

from esx_service.admin import cli
from esx_service.admin.client import AdminClient, NotJson, Refused, Unreachable
from tests.fakes import one_shot_unix_server


def test_a_call_answers_the_admin_apis_json(stack) -> None:
    reply = AdminClient(stack.socket, 5).call("GET", "vmgroups")
    assert [g["name"] for g in reply["vmgroups"]] == ["_DEFAULT"]


def test_a_call_sends_its_body_and_query(stack) -> None:
    client = AdminClient(stack.socket, 5)
    client.call("POST", "vmgroups", {"name": "g1", "description": "", "vms": []})
    assert "g1" in [g["name"] for g in client.call("GET", "vmgroups")["vmgroups"]]
    totals = client.call("GET", "volumes", query={"datastore": "ds2"})["totals"]
    assert [t["datastore"] for t in totals] == ["ds2"]


def test_an_error_answer_keeps_its_code_message_status_and_body(stack) -> None:
    with pytest.raises(Refused) as err:
        AdminClient(stack.socket, 5).call("GET", "vmgroups/nobody/vms")
    assert (err.value.status, err.value.code) == (404, "NotFound")
    assert "nobody" in (err.value.message or "")
    assert err.value.reply is not None and err.value.reply["error"]["code"] == "NotFound"


def test_a_missing_socket_is_unreachable_with_the_os_error(short_dir: str) -> None:
    path = os.path.join(short_dir, "none.sock")
    with pytest.raises(Unreachable) as err:
        AdminClient(path, 2).call("GET", "status")
    assert err.value.socket_path == path
    assert isinstance(err.value.cause, FileNotFoundError)


def test_a_silent_service_is_unreachable_after_the_timeout(short_dir: str) -> None:
    path = os.path.join(short_dir, "silent.sock")
    one_shot_unix_server(path, None)
    with pytest.raises(Unreachable) as err:
        AdminClient(path, 0.2).call("GET", "status")
    assert isinstance(err.value.cause, TimeoutError)


def test_a_non_json_answer_keeps_its_status_and_body(short_dir: str) -> None:
    path = os.path.join(short_dir, "weird.sock")
    one_shot_unix_server(path, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\nnot json!")
    with pytest.raises(NotJson) as err:
        AdminClient(path, 2).call("GET", "status")
    assert (err.value.status, err.value.raw) == (502, b"not json!")


def test_an_error_status_without_an_envelope_has_no_code(short_dir: str) -> None:
    path = os.path.join(short_dir, "bare.sock")
    one_shot_unix_server(path, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(Refused) as err:
        AdminClient(path, 2).call("GET", "status")
    assert (err.value.status, err.value.code, err.value.message, err.value.reply) == \
        (503, None, None, {})


def test_text_answers_the_body_and_refuses_an_error_status(short_dir: str) -> None:
    ok, bad = os.path.join(short_dir, "ok.sock"), os.path.join(short_dir, "bad.sock")
    one_shot_unix_server(ok, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nup 1\n\n\n")
    one_shot_unix_server(bad, b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom")
    assert AdminClient(ok, 2).text("metrics") == "up 1\n\n\n"
    with pytest.raises(Refused) as err:
        AdminClient(bad, 2).text("metrics")
    assert (err.value.status, err.value.code) == (500, None)


# -- dockvols-admin's words for each failure (one line on stderr, exit 1) -----------------
def _admin(socket_path: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["--socket", socket_path, "--json", "status"])
    return code, capsys.readouterr().err


def test_the_cli_names_a_non_json_answer_bad_response(
        short_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(short_dir, "weird.sock")
    one_shot_unix_server(path, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\nnot json!")
    assert _admin(path, capsys) == (
        1, "dockvols-admin: BadResponse: the service answered 502 with non-JSON: "
           "b'not json!'\n")


def test_the_cli_names_an_error_without_an_envelope_by_its_status(
        short_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(short_dir, "bare.sock")
    one_shot_unix_server(path, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\n{}")
    assert _admin(path, capsys) == (1, "dockvols-admin: HTTP503: {}\n")


def test_the_cli_prints_the_services_code_and_message(
        stack, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--socket", stack.socket, "vmgroup", "vm", "ls", "--name", "nobody"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("dockvols-admin: NotFound: ")
    assert "nobody" in err and len(err.splitlines()) == 1
