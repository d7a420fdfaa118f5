"""Transports. Each decides who the caller is; the API never reads identity from a request.

- ``UnixApiServer``: HTTP on a unix socket bound to one VM identity (same-host callers).
- ``TlsApiServer``: HTTPS on TCP with mutual TLS; the client certificate's common name is
  the VM. A connection without a certificate signed by the configured CA never reaches the
  API.
- ``VsockApiServer``: HTTP on AF_VSOCK, for guests of this ESXi host; the peer's context ID
  (CID), which the hypervisor sets and a guest cannot forge, names the VM. A CID that maps
  to no VM is refused.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import ssl
import threading
from typing import Protocol

from dockvols_common.http_server import (
    HttpHandler,
    HttpServerMixin,
    Request,
    Response,
    UnixHttpServer,
)

from .api import MAX_BODY, Text
from .errors import BadRequest, DockvolsError, MethodNotAllowed

log = logging.getLogger("dockvols.server")
HANDSHAKE_TIMEOUT = 10.0
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE")
IDLE_TIMEOUT = 120.0


class Handler(Protocol):
    def handle(self, method: str, path: str, body: bytes,
               vm: str) -> tuple[int, dict | Text]: ...


class _RequestHandler(HttpHandler):
    """The API on the lean HTTP server both halves share (dockvols_common/http_server.py):
    request line and headers split by hand, each answer in one write (issue 15: a Get is
    two hops, and http.server's email.parser headers and its writes were most of this one).
    Refusals and failures answer in the API's JSON error shape."""

    server: ApiServer  # type: ignore[assignment]
    timeout = IDLE_TIMEOUT  # a silent client never holds a thread for ever
    max_body = MAX_BODY

    def answer(self, request: Request) -> Response:
        if request.method not in ALLOWED_METHODS:
            response = _error_response(405, MethodNotAllowed(
                f"HTTP method {request.method!r} is not supported; "
                f"use {', '.join(ALLOWED_METHODS)}"))
            response.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            return response
        vm = self.server.caller_vm(self.connection)
        status, reply = self.server.api.handle(request.method, request.target, request.body,
                                               vm)
        if isinstance(reply, Text):
            return Response(status, reply.body.encode(), reply.content_type)
        return Response(status, json.dumps(reply).encode())

    def refusal(self, status: int, message: str) -> Response:
        """The server's own refusals (a malformed request line, a line too long, a body over
        the limit, an HTTP version or transfer coding we do not speak): all the caller's."""
        error = BadRequest(message)
        return _error_response(status if 400 <= status < 500 else error.http_status, error)

    def failure(self, request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return _error_response(500, DockvolsError(
            f"internal error on {request.method} {request.path}: {type(exc).__name__}; "
            "see the service log"))


def _error_response(status: int, error: DockvolsError) -> Response:
    # after a refusal the stream may be out of step: the connection closes
    return Response(status, json.dumps(error.to_wire()).encode(), close=True)


class ApiServer(HttpServerMixin, socketserver.TCPServer):
    api: Handler

    def caller_vm(self, connection: socket.socket) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return str(self.server_address)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=f"api:{self.describe()}",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class UnixApiServer(ApiServer, UnixHttpServer):
    """An HTTP server on a unix socket whose every caller is the VM ``vm_name``; the socket
    file is made, replaced and removed as UnixHttpServer does."""

    def __init__(self, path: str, api: Handler, vm_name: str, mode: int = 0o660) -> None:
        self.api = api
        self.vm_name = vm_name
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        UnixHttpServer.__init__(self, path, _RequestHandler, mode)  # type: ignore[arg-type]

    def caller_vm(self, connection: socket.socket) -> str:
        return self.vm_name

    def describe(self) -> str:
        return f"unix:{self.server_address} vm={self.vm_name}"


class VsockApiServer(ApiServer):
    address_family = socket.AF_VSOCK

    def __init__(self, port: int, api: Handler, vms_by_cid: dict[int, str]) -> None:
        self.api = api
        self.vms_by_cid = dict(vms_by_cid)
        super().__init__((socket.VMADDR_CID_ANY, port), _RequestHandler)  # type: ignore[arg-type]

    def verify_request(self, request, client_address) -> bool:  # type: ignore[no-untyped-def]
        if client_address[0] in self.vms_by_cid:
            return True
        log.warning("vsock peer CID %s maps to no VM: refused", client_address[0])
        return False

    def caller_vm(self, connection: socket.socket) -> str:
        return self.vms_by_cid[connection.getpeername()[0]]

    def describe(self) -> str:
        return f"vsock:{self.server_address[1]} cids={','.join(map(str, self.vms_by_cid))}"


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(client_ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(cert: dict | None) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class TlsApiServer(ApiServer):
    """HTTPS with mutual TLS on TCP; the handshake runs in the request thread, so a slow
    or hostile client cannot stall the accept loop."""

    def __init__(self, address: tuple[str, int], api: Handler,
                 context: ssl.SSLContext) -> None:
        self.api = api
        self._context = context
        super().__init__(address, _RequestHandler)  # type: ignore[arg-type]

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self._context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake from %s refused: %s", client_address[0], exc)
            return
        if common_name(tls.getpeercert()) is None:
            log.warning("TLS client %s has no common name: refused", client_address[0])
            tls.close()
            return
        tls.settimeout(IDLE_TIMEOUT)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def caller_vm(self, connection: socket.socket) -> str:
        name = common_name(connection.getpeercert())  # type: ignore[attr-defined]
        assert name is not None  # checked at handshake
        return name

    def describe(self) -> str:
        host, port = self.server_address[:2]
        return f"tls:{host!s}:{port}"
