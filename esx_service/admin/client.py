"""The one client of the admin API on its root-only unix socket: ``dockvols-admin`` (cli.py)
and the admin page (admin_web/source.py) both ask through it.

Standard library only, because dockvols-admin runs on ESXi. The connection is the shared one
(dockvols_common.http_client) and the error envelope is read by dockvols_common.wire; this
module adds the admin API's path, JSON both ways and one exception per way a call fails.
Each exception carries the facts, not a sentence: each caller words the message for its own
reader (an administrator at a shell, a page and its scraper).
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlencode

from dockvols_common import wire
from dockvols_common.http_client import UnixHTTPConnection, request

PREFIX = "/v1/admin/"


class AdminApiError(Exception):
    """A call of the admin API failed; the subclass says how."""


class Unreachable(AdminApiError):
    """No answer: the socket is missing or refused, a read timed out, or what came back was
    not HTTP. ``cause`` is the standard library's exception."""

    def __init__(self, socket_path: str, cause: OSError | http.client.HTTPException) -> None:
        super().__init__(f"{socket_path}: {cause}")
        self.socket_path, self.cause = socket_path, cause


class NotJson(AdminApiError):
    """An answer whose body is not JSON (``raw`` is that body)."""

    def __init__(self, path: str, status: int, raw: bytes) -> None:
        super().__init__(f"{path} answered {status} with non-JSON")
        self.path, self.status, self.raw = path, status, raw


class Refused(AdminApiError):
    """An error answer (HTTP status 400 or more). ``code`` and ``message`` are its error
    envelope's, ``None`` when the body has none (something other than dockvols answered);
    ``reply`` is the decoded body, ``None`` for a text call."""

    def __init__(self, path: str, status: int, code: str | None = None,
                 message: str | None = None, reply: dict | None = None) -> None:
        super().__init__(f"{path} answered {status}: {code}: {message}")
        self.path, self.status, self.code, self.message = path, status, code, message
        self.reply = reply


class AdminClient:
    """Calls of the admin API; ``timeout`` bounds the connect and each read."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def send(self, method: str, path: str, body: dict | None = None,
             query: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request to ``/v1/admin/<path>``: its status and body, whatever the status."""
        url = PREFIX + path + (f"?{urlencode(query)}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        try:
            response, raw = request(UnixHTTPConnection(self.socket_path, self.timeout),
                                    method, url, payload,
                                    {"Content-Type": "application/json"})
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(self.socket_path, exc) from exc
        return response.status, raw

    def call(self, method: str, path: str, body: dict | None = None,
             query: dict[str, str] | None = None) -> dict:
        """The decoded JSON answer of a call that succeeded."""
        status, raw = self.send(method, path, body, query)
        try:
            reply = json.loads(raw or b"{}")
        except ValueError as exc:
            raise NotJson(path, status, raw) from exc
        if status >= 400:
            error = wire.error_of(reply)
            raise Refused(path, status, error.get("code"), error.get("message"), reply)
        return reply

    def text(self, path: str) -> str:
        """The body of a ``GET`` that answers text (``metrics``)."""
        status, raw = self.send("GET", path)
        if status >= 400:
            raise Refused(path, status)
        return raw.decode()
