"""The client of esx_service's HTTP/JSON API (over unix socket, vsock, TCP or TLS: the
connections are dockvols_common.http_client's); its failures become the plugin's errors."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Protocol
from urllib.parse import quote

from dockvols_common import wire
from dockvols_common.http_client import Answer, lean_exchange, open_connection, request

from .errors import ServiceError, ServiceUnreachable


class EsxClient(Protocol):
    def create(self, name: str, opts: dict) -> dict: ...
    def get(self, name: str, timeout: float | None = None) -> dict: ...
    def list(self, timeout: float | None = None) -> list[dict]: ...
    def remove(self, name: str) -> None: ...
    def attach(self, name: str) -> dict: ...
    def detach(self, name: str, formatted: bool = False) -> dict: ...
    def resize(self, name: str, size: str) -> dict: ...
    def status(self, timeout: float | None = None) -> dict: ...


LIST_PATH = "/v1/volumes"


class _SameAnswer:
    """The last answer to one GET and its parsed form: a List of thousands of volumes that
    did not change is compared byte for byte, not parsed again (issue 15). What it hands
    out is shared: callers only read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw = b""
        self._data: dict | None = None

    def loads(self, raw: bytes) -> dict:
        with self._lock:
            if self._data is not None and raw == self._raw:
                return self._data
        data = json.loads(raw)
        if isinstance(data, dict):
            with self._lock:
                self._raw, self._data = raw, data
        return data


class HttpEsxClient:
    """Reads (GET) reuse one kept-alive connection per thread: a Get is two hops, and a new
    connection costs esx_service a thread and us a connect (issue 15). Changes (create,
    attach...) take a connection of their own each: they are few and long, and a request
    that may have reached the service is never sent twice."""

    def __init__(self, address: str, timeout: float = 100.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        self._kept = threading.local()
        self._lists = _SameAnswer()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        return open_connection(self.address, timeout, self.tls)

    def call(self, method: str, path: str, body: dict | None = None,
             timeout: float | None = None) -> dict:
        limit = timeout or self.timeout
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        response: Answer | http.client.HTTPResponse
        try:
            if method == "GET":
                response, raw = self._read(path, limit)
            else:
                response, raw = request(self._connection(limit), method, path, payload,
                                        headers)
        except TimeoutError as exc:
            raise ServiceUnreachable(
                f"dockvols service at {self.address} timed out after {limit:.0f}s on {method} "
                f"{path}; it may still complete the operation, and retrying is safe") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnreachable(
                f"dockvols service at {self.address} is unreachable ({method} {path}): "
                f"{exc or type(exc).__name__}") from exc
        try:
            if method == "GET" and path == LIST_PATH and response.status == 200:
                data = self._lists.loads(raw)
            else:
                data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ServiceUnreachable(f"dockvols service answered {method} {path} with "
                                     f"non-JSON (HTTP {response.status})") from exc
        if response.status >= 400:
            err = wire.error_of(data)
            raise ServiceError(err.get("code", wire.INTERNAL_ERROR),
                               err.get("message", f"HTTP {response.status}"), response.status)
        return data

    def _read(self, path: str, limit: float) -> tuple[Answer, bytes]:
        """A GET on this thread's kept-alive connection. One the service has closed (idle
        timeout, restart) fails before any answer: then once more on a new connection,
        which is safe because a GET changes nothing."""
        conn: http.client.HTTPConnection | None = getattr(self._kept, "conn", None)
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = self._connection(limit)
            elif conn.sock is not None:
                conn.sock.settimeout(limit)
            else:
                conn.timeout = limit
            self._kept.conn = conn
            try:
                response, raw = lean_exchange(conn, "GET", path)
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest, http.client.BadStatusLine):
                conn.close()
                self._kept.conn = conn = None
                if not reused:
                    raise
                reused = False
                continue
            except BaseException:
                conn.close()
                self._kept.conn = None
                raise
            if response.will_close:
                conn.close()
                self._kept.conn = None
            return response, raw
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _vol(name: str, action: str = "") -> str:
        return f"/v1/volumes/{quote(name, safe='')}" + (f"/{action}" if action else "")

    def create(self, name: str, opts: dict) -> dict:
        return self.call("POST", "/v1/volumes", {"name": name, "opts": opts})["volume"]

    def get(self, name: str, timeout: float | None = None) -> dict:
        return self.call("GET", self._vol(name), timeout=timeout)["volume"]

    def list(self, timeout: float | None = None) -> list[dict]:
        return self.call("GET", LIST_PATH, timeout=timeout)["volumes"]

    def remove(self, name: str) -> None:
        self.call("DELETE", self._vol(name))

    def attach(self, name: str) -> dict:
        return self.call("POST", self._vol(name, "attach"), {})

    def detach(self, name: str, formatted: bool = False) -> dict:
        body = {"formatted": True} if formatted else {}
        return self.call("POST", self._vol(name, "detach"), body)["volume"]

    def resize(self, name: str, size: str) -> dict:
        """Grow the volume: ``{"volume", "previous_capacity_mb", "filesystem"}``."""
        return self.call("POST", self._vol(name, "resize"), {"size": size})

    def status(self, timeout: float | None = None) -> dict:
        """Service version, backend, and the VM identity this client is seen as."""
        return self.call("GET", "/v1/status", timeout=timeout)
