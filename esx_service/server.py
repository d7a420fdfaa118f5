"""Transports: HTTP over unix sockets, each socket bound to one caller VM identity."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .api import MAX_BODY, Api

log = logging.getLogger("dockvols.server")


class _Handler(BaseHTTPRequestHandler):
    server: UnixApiServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            status, reply = 413, {"error": {"code": "BadRequest", "message":
                                            f"request body of {length} bytes is over the "
                                            f"{MAX_BODY} byte limit"}}
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            status, reply = self.server.api.handle(self.command, self.path, body,
                                                   self.server.vm_name)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def address_string(self) -> str:
        return f"vm:{self.server.vm_name}"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class UnixApiServer(ThreadingHTTPServer):
    """An HTTP server on a unix socket whose every caller is the VM ``vm_name``."""

    address_family = socket.AF_UNIX
    daemon_threads = True

    def __init__(self, path: str, api: Api, vm_name: str, mode: int = 0o660) -> None:
        self.api = api
        self.vm_name = vm_name
        self._mode = mode
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a previous run
        super().__init__(path, _Handler)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        os.chmod(self.server_address, self._mode)  # type: ignore[arg-type]
        self.server_name, self.server_port = "localhost", 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=f"api:{self.server_address}",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.server_address)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass
