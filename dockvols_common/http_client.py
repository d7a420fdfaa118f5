"""HTTP/1.1 over every transport dockvols speaks: a unix socket (esx_service's VM-facing and
admin APIs, the plugin's own socket, the Docker engine), vsock (a guest to its ESXi host,
CID 2), TCP and mutual TLS. One connection class per transport, one way to pick it from an
address, one request-and-read.

Failures are the standard library's (OSError and its TimeoutError, http.client.HTTPException;
ValueError for a bad address): each side turns them into its own error family at its edge,
and only it knows what to tell its user.
"""

from __future__ import annotations

import http.client
import socket
import ssl

Address = str  # unix:///path, vsock://CID:PORT, http://host:port, https://host:port


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; ``timeout`` bounds the connect and each read."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class VsockHTTPConnection(http.client.HTTPConnection):
    """HTTP over vsock: from a guest, its ESXi host is CID 2."""

    def __init__(self, cid: int, port: int, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.address = (cid, port)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.address)
        self.sock = sock


def parse_vsock_address(address: Address) -> tuple[int, int]:
    """``vsock://CID:PORT`` -> (cid, port)."""
    cid, sep, port = address[len("vsock://"):].rstrip("/").partition(":")
    if not sep or not cid.isdigit() or not port.isdigit():
        raise ValueError(f"invalid vsock address {address!r}: use vsock://CID:PORT, "
                         "e.g. vsock://2:1019 for this VM's ESXi host")
    return int(cid), int(port)


def client_tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """Mutual TLS: our certificate names this VM; the service's must chain to ``ca_file``."""
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    return context


def open_connection(address: Address, timeout: float,
                    tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to ``address``, not yet connected (the first request connects)."""
    if address.startswith("unix://"):
        return UnixHTTPConnection(address[len("unix://"):], timeout)
    if address.startswith("vsock://"):
        return VsockHTTPConnection(*parse_vsock_address(address), timeout)
    host = address.split("://", 1)[1].rstrip("/")
    if address.startswith("https://"):
        return http.client.HTTPSConnection(host, timeout=timeout, context=tls)
    return http.client.HTTPConnection(host, timeout=timeout)


def exchange(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on ``conn`` and its whole answer (the connection stays open)."""
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def request(conn: http.client.HTTPConnection, method: str, path: str,
            body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on ``conn`` and its whole answer, then the connection is closed, whether
    the request succeeded or not."""
    try:
        return exchange(conn, method, path, body, headers)
    finally:
        conn.close()
