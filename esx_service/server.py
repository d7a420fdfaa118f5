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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from .api import MAX_BODY, Text
from .errors import BadRequest, DockvolsError, MethodNotAllowed

log = logging.getLogger("dockvols.server")
HANDSHAKE_TIMEOUT = 10.0
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE")
IDLE_TIMEOUT = 120.0


# after a refusal: how long and how much of a client's unread input is read and dropped
DISCARD_SECONDS = 0.5
DISCARD_READS = 64

class Handler(Protocol):
    def handle(self, method: str, path: str, body: bytes,
               vm: str) -> tuple[int, dict | Text]: ...


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # a silent client never holds a thread for ever
    # Buffered writes: status line, headers and a small body leave in one send when
    # http.server flushes after each request, so the client wakes once per answer, not
    # once for the headers and again for the body (issue 15: a Get is two hops).
    wbufsize = -1

    def _serve(self) -> None:
        vm = self.server.caller_vm(self.connection)
        reply: dict | Text
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            declared = self.headers.get("Content-Length")
            status, reply = 413, {"error": {"code": "BadRequest", "message":
                                            f"request body length {declared!r} is invalid "
                                            f"or over the {MAX_BODY} byte limit"}}
            self.close_connection = self._refused = True
        else:
            body = self.rfile.read(length) if length else b""
            status, reply = self.server.api.handle(self.command, self.path, body, vm)
        if isinstance(reply, Text):
            data, content_type = reply.body.encode(), reply.content_type
        else:
            data, content_type = json.dumps(reply).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method, a malformed request line, headers
        too long) in the API's JSON error shape instead of its HTML page."""
        error: DockvolsError
        if code == 501:  # no do_<METHOD>: the caller's mistake, not an unimplemented server
            error = MethodNotAllowed(f"HTTP method {self.command!r} is not supported; "
                                     f"use {', '.join(ALLOWED_METHODS)}")
        else:  # 400, 414, 431, and 505 for an HTTP version we do not speak: all the caller's
            error = BadRequest(f"{message or 'bad request'}" + (f": {explain}" if explain
                                                                else ""))
        code = error.http_status if code == 501 or not 400 <= code < 500 else code
        data = json.dumps(error.to_wire()).encode()
        # after a refusal the stream may be out of step
        self.close_connection = self._refused = True
        # a request line too broken to name its version still gets a status line and headers
        self.request_version = self.protocol_version
        try:
            self.send_response(code)
            if code == 405:
                self.send_header("Allow", ", ".join(ALLOWED_METHODS))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(data)
        except OSError:
            pass  # the client went away

    _refused = False  # this connection's request was refused and it closes unread

    def finish(self) -> None:
        """After a refusal (an over-long line, a body over the limit), read briefly what the
        client is still sending before the connection closes: closing with unread input
        resets the connection, and the client may then lose the answer it has not read."""
        super().finish()  # flushes the answer
        if not self._refused:
            return
        try:
            self.connection.settimeout(DISCARD_SECONDS)
            for _ in range(DISCARD_READS):
                if not self.connection.recv(65536):
                    return
        except OSError:
            pass  # the client went away, or kept its side open past the wait

    def address_string(self) -> str:
        return self.server.describe()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 makes unix-socket clients fail with EAGAIN under
    # a burst of containers starting at once.
    request_queue_size = 256
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


class UnixApiServer(ApiServer):
    """An HTTP server on a unix socket whose every caller is the VM ``vm_name``."""

    address_family = socket.AF_UNIX

    def __init__(self, path: str, api: Handler, vm_name: str, mode: int = 0o660) -> None:
        self.api = api
        self.vm_name = vm_name
        self._mode = mode
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a previous run
        super().__init__(path, _RequestHandler)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        os.chmod(self.server_address, self._mode)  # type: ignore[arg-type]
        self.server_name, self.server_port = "localhost", 0

    def caller_vm(self, connection: socket.socket) -> str:
        return self.vm_name

    def describe(self) -> str:
        return f"unix:{self.server_address} vm={self.vm_name}"

    def stop(self) -> None:
        super().stop()
        try:
            os.unlink(self.server_address)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass


class VsockApiServer(ApiServer):
    address_family = socket.AF_VSOCK

    def __init__(self, port: int, api: Handler, vms_by_cid: dict[int, str]) -> None:
        self.api = api
        self.vms_by_cid = dict(vms_by_cid)
        super().__init__((socket.VMADDR_CID_ANY, port), _RequestHandler)  # type: ignore[arg-type]

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "vsock", self.server_address[1]

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
