"""The versioned HTTP/JSON API, as a pure function of (method, path, body, caller VM).

Transports (server.py) decide who the caller is; this module never reads identity from the
request. ``answer`` is the one place where service errors become HTTP statuses, for these
routes and the admin routes (``esx_service.admin.admin_api``) alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

from dockvols_common import wire

from . import __version__
from .errors import BadRequest, DockvolsError, NotFound
from .volumes import VolumeService

log = logging.getLogger("dockvols.api")
MAX_BODY = 64 * 1024

B = TypeVar("B")  # a reply's body: dict, or Text (the admin socket's metrics, List)


@dataclass(frozen=True)
class Text:
    """A reply body sent as it is: not JSON (the Prometheus text format of
    ``/v1/admin/metrics``), or JSON already encoded (List)."""

    body: str
    content_type: str


Reply = tuple[int, dict | Text]


def answer(route: Callable[[], tuple[int, B]], method: str, path: str,
           caller: str) -> tuple[int, B | dict]:
    """The error boundary of every route, VM-facing and admin: ``route()``'s reply, or the
    error it raised as HTTP (a DockvolsError's status and wire form; anything else a 500
    whose traceback is logged, never sent). ``caller`` says who asked, for the log."""
    try:
        return route()
    except DockvolsError as exc:
        return exc.http_status, exc.to_wire()
    except Exception:  # log the traceback, answer without it
        log.exception("internal error on %s %s %s", method, path, caller)
        return 500, wire.error_body(wire.INTERNAL_ERROR, f"internal error on {method} {path}; "
                                                         "see the dockvols service log")


class Api:
    def __init__(self, service: VolumeService) -> None:
        self.service = service

    def handle(self, method: str, path: str, body: bytes, vm: str) -> Reply:
        return answer(lambda: self._route(method, path.split("?", 1)[0], body, vm),
                      method, path, f"from VM {vm}")

    def _route(self, method: str, path: str, body: bytes, vm: str) -> Reply:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise NotFound(f"no such API path {path!r}; the API is under /v1/")
        rest = parts[1:]
        svc = self.service
        if rest == ["status"] and method == "GET":
            return 200, {"version": __version__, "backend": svc.backend.name, "vm": vm}
        if rest == ["datastores"] and method == "GET":
            infos = svc.datastores()  # one listing: on vsphere each is a round trip
            default = svc.default_datastore(vm, [d.name for d in infos])
            return 200, {"datastores": [
                {**d.__dict__, "default": d.name == default} for d in infos]}
        if rest == ["volumes"]:
            if method == "GET":
                return 200, Text(svc.list_json(vm), "application/json")
            if method == "POST":
                req = _json_body(body)
                return 201, {"volume": svc.create(vm, req.get("name"), req.get("opts"))}
        if len(rest) in (2, 3) and rest[0] == "volumes":
            name = unquote(rest[1])
            action = rest[2] if len(rest) == 3 else None
            if action is None and method == "GET":
                return 200, {"volume": svc.get(vm, name)}
            if action is None and method == "DELETE":
                svc.remove(vm, name)
                return 200, {}
            if action == "attach" and method == "POST":
                return 200, svc.attach(vm, name)
            if action == "resize" and method == "POST":
                return 200, svc.resize(vm, name, _json_body(body).get("size"))
            if action == "detach" and method == "POST":
                formatted = _json_body(body).get("formatted") is True
                return 200, {"volume": svc.detach(vm, name, formatted)}
        raise NotFound(f"no route for {method} {path}")


def _json_body(body: bytes) -> dict:
    if len(body) > MAX_BODY:
        raise BadRequest(f"request body of {len(body)} bytes is over the {MAX_BODY} byte limit")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("request body is JSON nested too deeply") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
    return data
