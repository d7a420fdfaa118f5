"""Reads what the page shows from esx_service's root-only admin socket (the admin API)."""

from __future__ import annotations

import http.client
import json
from typing import Protocol

from dockvols_common import wire
from dockvols_common.http_client import UnixHTTPConnection, request

TIMEOUT_S = 30.0  # GET volumes sizes every disk: one datastore search per volume on vsphere


class SourceError(Exception):
    """The admin API could not be read; the message says where and why."""


class AdminSource(Protocol):
    def json(self, path: str) -> dict: ...

    def text(self, path: str) -> str: ...


class SocketSource:
    def __init__(self, socket_path: str, timeout: float = TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            response, body = request(UnixHTTPConnection(self.socket_path, self.timeout), "GET",
                                     "/v1/admin/" + path)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"cannot read the dockvols admin socket {self.socket_path}: "
                              f"{exc}; is dockvols-esx-service running?") from exc
        return response.status, body

    def json(self, path: str) -> dict:
        status, body = self._get(path)
        try:
            reply = json.loads(body or b"{}")
        except ValueError as exc:
            raise SourceError(f"admin API {path} answered {status} with non-JSON") from exc
        if status >= 400:
            error = wire.error_of(reply)
            raise SourceError(f"admin API {path}: {error.get('code', status)}: "
                              f"{error.get('message', '')}")
        return reply

    def text(self, path: str) -> str:
        status, body = self._get(path)
        if status >= 400:
            raise SourceError(f"admin API {path} answered {status}")
        return body.decode()
