"""The admin page's reader of the admin API (admin_web/source.py): the words it gives each
failure, which the page and /metrics show, against scripted answers on a unix socket."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from admin_web.source import SocketSource, SourceError
from tests.fakes import one_shot_unix_server


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dvw-", dir="/tmp")  # unix socket paths: 107 bytes at most
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _answering(short_dir: str, reply: bytes) -> SocketSource:
    path = os.path.join(short_dir, "admin.sock")
    one_shot_unix_server(path, reply)
    return SocketSource(path, timeout=2)


def test_json_answers_the_decoded_body(short_dir: str) -> None:
    source = _answering(short_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"pid\": 7}")
    assert source.json("status") == {"pid": 7}


def test_text_answers_the_body(short_dir: str) -> None:
    source = _answering(short_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n")
    assert source.text("metrics") == "up 1\n"


def test_an_unreachable_socket_says_which_and_asks_whether_the_service_runs(
        short_dir: str) -> None:
    path = os.path.join(short_dir, "none.sock")
    with pytest.raises(SourceError, match=f"^cannot read the dockvols admin socket {path}: "
                       r".*No such file.*; is dockvols-esx-service running\?$"):
        SocketSource(path, timeout=2).json("status")
    with pytest.raises(SourceError, match="^cannot read the dockvols admin socket"):
        SocketSource(path, timeout=2).text("metrics")


def test_an_error_answer_names_the_path_code_and_message(short_dir: str) -> None:
    body = b'{"error": {"code": "NotFound", "message": "no vmgroup g"}}'
    source = _answering(short_dir, b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body))
    with pytest.raises(SourceError) as err:
        source.json("vmgroups/g/vms")
    assert str(err.value) == "admin API vmgroups/g/vms: NotFound: no vmgroup g"


def test_an_error_answer_without_an_envelope_names_its_status(short_dir: str) -> None:
    source = _answering(short_dir, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(SourceError) as err:
        source.json("status")
    assert str(err.value) == "admin API status: 503: "


def test_a_non_json_answer_says_so(short_dir: str) -> None:
    source = _answering(short_dir, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\nnope")
    with pytest.raises(SourceError) as err:
        source.json("inventory")
    assert str(err.value) == "admin API inventory answered 502 with non-JSON"


def test_a_text_error_names_the_path_and_status(short_dir: str) -> None:
    source = _answering(short_dir, b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom")
    with pytest.raises(SourceError) as err:
        source.text("metrics")
    assert str(err.value) == "admin API metrics answered 500"
