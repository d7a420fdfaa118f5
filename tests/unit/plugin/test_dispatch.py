"""plugin/dispatch.py: the VolumeDriver calls as plain WSGI, called as plugin/server.py calls it."""

from __future__ import annotations

import io
import json

from plugin.dispatch import MAX_BODY, VolumeDriverDispatch


def _call(app, path: str, body: bytes, method: str = "POST", length: bool = True):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(body)}
    if length:
        environ["CONTENT_LENGTH"] = str(len(body))
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    data = b"".join(app(environ, start_response))
    assert int(seen["headers"]["Content-Length"]) == len(data)
    return int(seen["status"].split()[0]), json.loads(data)


def _app(observed: list | None = None):
    class Observer:
        def observe(self, endpoint, outcome, seconds):
            observed.append((endpoint, outcome))

    def fallback(environ, start_response):
        start_response("404 NOT FOUND", [("Content-Length", "2")])
        return [b"{}"]

    return VolumeDriverDispatch({"/VolumeDriver.Get": lambda data: {"Got": data, "Err": ""}},
                                fallback, Observer() if observed is not None else None)


def test_a_body_without_a_length_is_read_and_one_over_the_limit_refused():
    assert _call(_app(), "/VolumeDriver.Get", b'{"Name": "db"}', length=False) == (
        200, {"Got": {"Name": "db"}, "Err": ""})
    status, reply = _call(_app(), "/VolumeDriver.Get", b" " * (MAX_BODY + 1), length=False)
    assert status == 500 and f"{MAX_BODY} bytes" in reply["Err"]


def test_other_paths_go_to_the_fallback_and_other_methods_are_405():
    assert _call(_app(), "/metrics", b"", method="GET") == (404, {})
    status, reply = _call(_app(), "/VolumeDriver.Get", b"", method="GET")
    assert status == 405 and "POST" in reply["Err"]


def test_each_call_is_observed_with_its_outcome():
    observed: list = []
    _call(_app(observed), "/VolumeDriver.Get", b"{}")
    _call(_app(observed), "/VolumeDriver.Get", b"[1]")
    assert observed == [("VolumeDriver.Get", "ok"), ("VolumeDriver.Get", "BadRequest")]
