"""The client of esx_service's HTTP/JSON API (over unix socket, vsock, TCP or TLS: the
connections are dockvols_common.http_client's); its failures become the plugin's errors."""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
import time
from typing import Protocol
from urllib.parse import quote

from dockvols_common import wire
from dockvols_common.http_client import Answer, lean_exchange, open_connection

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
# Seconds a kept connection may sit idle and still carry a change: a quarter of the
# service's idle timeout (dockvols_common.http_server.IDLE_TIMEOUT), so that the service
# never closes it under a request being sent.
KEEP_IDLE = 30.0


def _readable(sock: socket.socket) -> bool:
    """Whether the service wrote to (or closed) a connection with no request in flight:
    it never speaks unasked, so either way the connection is not to be used again."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


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
    """Every call goes on this thread's kept-alive connection: a new connection costs the
    service a thread and us a connect, 0.15 ms of a 0.33 ms hop here (issue 15). A change
    (create, attach...) that may have reached the service is never sent twice, so before a
    change reuses a connection it must look alive: not idle past ``KEEP_IDLE`` (well
    inside the service's own idle timeout) and with nothing to read, since a service that
    closed it (a restart, a drain) makes it readable. A GET met by a closed connection is
    simply sent again on a new one."""

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
        try:
            response, raw = self._exchange(method, path, payload, limit)
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

    def _reusable(self) -> http.client.HTTPConnection | None:
        """This thread's kept connection if it looks alive, else None (and it is closed)."""
        conn: http.client.HTTPConnection | None = getattr(self._kept, "conn", None)
        if conn is None:
            return None
        if conn.sock is not None and time.monotonic() - self._kept.used < KEEP_IDLE \
                and not _readable(conn.sock):
            return conn
        conn.close()
        self._kept.conn = None
        return None

    def _exchange(self, method: str, path: str, payload: bytes | None,
                  limit: float) -> tuple[Answer, bytes]:
        conn = self._reusable()
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = self._connection(limit)
            else:
                conn.sock.settimeout(limit)
            self._kept.conn = conn
            try:
                response, raw = lean_exchange(conn, method, path, payload)
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest, http.client.BadStatusLine):
                conn.close()
                self._kept.conn = conn = None
                if not reused or method != "GET":
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
            else:
                self._kept.used = time.monotonic()
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
