"""The VolumeDriver calls as a plain WSGI dispatch in front of flask: dockerd's calls are a
fixed set of POSTs, each a JSON object in and a JSON object out, and Get and Path sit on the
path of every `docker volume inspect` and container start (issue 15: flask's request and
app contexts, hooks and response objects cost more than the call itself). The one error
boundary for these calls is here; anything else (``GET /metrics``, unknown paths) is
flask's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .errors import BadRequest, PluginError

log = logging.getLogger("dockvols.plugin.app")
MAX_BODY = 256 * 1024

Route = Callable[[dict], dict]  # the request body (a JSON object) -> the answer
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict, StartResponse], Iterable[bytes]]


class CallObserver(Protocol):
    def observe(self, endpoint: str, outcome: str, seconds: float) -> None: ...


class VolumeDriverDispatch:
    def __init__(self, routes: dict[str, Route], fallback: WsgiApp,
                 observer: CallObserver | None = None) -> None:
        self._routes = routes
        self._fallback = fallback
        self._observer = observer

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        route = self._routes.get(path)
        if route is None:
            return self._fallback(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 METHOD NOT ALLOWED", {
                "Err": f"method {environ.get('REQUEST_METHOD')} is not allowed on {path}: "
                       "VolumeDriver calls are POST"}, [("Allow", "POST")])
        started = time.monotonic()
        try:
            reply, status, outcome = route(read_body(environ)), "200 OK", "ok"
        except PluginError as exc:
            reply, status, outcome = {"Err": exc.message}, "500 INTERNAL SERVER ERROR", exc.code
        except Exception as exc:  # the boundary: log the traceback, answer without it
            log.exception("internal error on %s", path)
            reply = {"Err": f"dockvols plugin internal error on {path}: "
                            f"{type(exc).__name__}; see the plugin log"}
            status, outcome = "500 INTERNAL SERVER ERROR", "crash"
        if self._observer is not None:
            self._observer.observe(path.lstrip("/"), outcome, time.monotonic() - started)
        return _answer(start_response, status, reply)


def _answer(start_response: StartResponse, status: str, reply: dict,
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(reply).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))] + (extra or []))
    return [data]


def read_body(environ: dict) -> dict:
    """The request's JSON object. dockerd sends no Content-Type, and an empty body for
    Activate or a retry (that is ``{}``)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise BadRequest(f"invalid Content-Length {environ.get('CONTENT_LENGTH')!r}") from exc
    if length > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes")
    stream = environ["wsgi.input"]
    # without a length (chunked), read one byte past the limit to tell
    raw = stream.read(length) if length else stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise BadRequest("request body is JSON nested too deeply") from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest("request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
    _refuse_lone_surrogates(data)
    return data


def _refuse_lone_surrogates(data: dict) -> None:
    """JSON may escape half a UTF-16 pair ("\\ud800"); no name, ID or option can hold one
    (it cannot be encoded to send on, to log or to put in a path)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode("ascii")
        raise BadRequest(f"request body holds the lone surrogate {bad!r}, which is not a "
                         "Unicode character: names, IDs and options must be valid "
                         "UTF-8 text") from exc
