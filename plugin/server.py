"""The plugin's WSGI app (plugin/app.py + plugin/dispatch.py) served on the VolumeDriver
socket by the lean server both halves share (dockvols_common/http_server.py): a thread per
kept-alive connection, so a Mount that takes seconds holds only its own connection, and
no hand-off between threads per request (issue 15: gunicorn's gthread worker cost about
1.7 raw HTTP hops on every call). SIGTERM (dockerd's stop) lets requests in flight finish
within ``drain_seconds``, then the socket file goes."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from dockvols_common.http_server import HttpHandler, Request, Response, UnixHttpServer
from dockvols_common.stop_signal import StopSignal

from .dispatch import MAX_BODY

log = logging.getLogger("dockvols.plugin.server")
WsgiApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]
_HOP_BY_HOP = {"content-length", "connection", "transfer-encoding", "keep-alive"}


def _envelope(status: int, message: str) -> Response:
    """The VolumeDriver error shape: dockerd reads ``Err`` from any status."""
    return Response(status, json.dumps({"Err": message}).encode() + b"\n")


class WsgiHandler(HttpHandler):
    app: WsgiApp  # set on the subclass handler_for() makes
    max_body = MAX_BODY

    def answer(self, request: Request) -> Response:
        environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(request.path, encoding="latin-1"),
            "QUERY_STRING": request.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(request.body)),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "0",
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers.items():
            if name not in ("content-type", "content-length"):
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        started: list = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: object = None) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return _no_write

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        content_type = None
        extra = []
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower not in _HOP_BY_HOP:
                extra.append((name, value))
        return Response(int(status.split(None, 1)[0]), body, content_type, extra)

    def refusal(self, status: int, message: str) -> Response:
        return _envelope(status, f"dockvols plugin refused the request: {message}")

    def failure(self, request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return _envelope(500, f"dockvols plugin internal error on {request.path}: "
                              f"{type(exc).__name__}; see the plugin log")


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the WSGI write() callable is not supported; return the body")


def handler_for(app: WsgiApp) -> type[WsgiHandler]:
    return type("PluginWsgiHandler", (WsgiHandler,), {"app": staticmethod(app)})


class PluginServer(UnixHttpServer):
    def __init__(self, socket_path: str, app: WsgiApp, mode: int = 0o660) -> None:
        super().__init__(socket_path, handler_for(app), mode)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="plugin-socket",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self, drain_seconds: float) -> bool:
        """No new connections, the socket file removed, then up to ``drain_seconds`` for
        the requests in flight: True when they all were answered."""
        self.shutdown()
        self.server_close()
        return self.drain(drain_seconds)


def serve_until_stopped(server: PluginServer, drain_seconds: float) -> bool:
    """Serve until SIGTERM or SIGINT; then stop as ``PluginServer.stop``."""
    stop = StopSignal()
    server.start()
    log.info("serving the VolumeDriver API on %s", server.server_address)
    stop.wait()
    log.info("stopping: letting requests in flight finish (up to %.0fs)", drain_seconds)
    drained = server.stop(drain_seconds)
    log.info("stopped%s", "" if drained else " with requests still in flight")
    return drained
