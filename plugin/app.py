"""The VolumeDriver endpoints: parse, call the volume manager, answer. The calls themselves
are dispatched without flask (plugin/dispatch.py, which is also their error boundary and
turns every failure into ``{"Err": "..."}``); flask serves ``GET /metrics`` and answers
unknown paths."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, request

from .dispatch import MAX_BODY, Route, VolumeDriverDispatch
from .errors import BadRequest
from .metrics import PluginMetrics
from .volume_manager import VolumeManager

log = logging.getLogger("dockvols.plugin.app")
__all__ = ["MAX_BODY", "create_app", "volume_driver_routes"]


def _name(data: dict) -> str:
    name = data.get("Name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"missing or invalid volume Name {name!r}")
    return name


def _mount_id(data: dict) -> str:
    mount_id = data.get("ID")
    if not isinstance(mount_id, str) or not mount_id:
        raise BadRequest(f"missing or invalid mount ID {mount_id!r}")
    return mount_id


def volume_driver_routes(manager: VolumeManager) -> dict[str, Route]:
    """Path -> what answers it, from the request body (a JSON object)."""

    def create(data: dict) -> dict:
        opts = data.get("Opts")
        if opts is not None and not isinstance(opts, dict):
            raise BadRequest(f"Opts must be a map, got {type(opts).__name__}")
        manager.create(_name(data), opts or {})
        return {"Err": ""}

    def remove(data: dict) -> dict:
        manager.remove(_name(data))
        return {"Err": ""}

    def unmount(data: dict) -> dict:
        manager.unmount(_name(data), _mount_id(data))
        return {"Err": ""}

    # Not a VolumeDriver call (dockerd has no resize verb): the guest command
    # `dockvols volume resize` asks this on the plugin's own socket.
    def resize(data: dict) -> dict:
        size = data.get("Size")
        if not isinstance(size, str) or not size:
            raise BadRequest(f"missing or invalid Size {size!r}: use X[mb|gb|tb], e.g. 20gb")
        return {**manager.resize(_name(data), size), "Err": ""}

    return {
        "/Plugin.Activate": lambda data: {"Implements": ["VolumeDriver"]},
        "/VolumeDriver.Capabilities": lambda data: {"Capabilities": {"Scope": "global"}},
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": lambda data: {
            "Mountpoint": manager.mount(_name(data), _mount_id(data)), "Err": ""},
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": lambda data: {"Mountpoint": manager.path(_name(data)), "Err": ""},
        "/VolumeDriver.Get": lambda data: {"Volume": manager.get(_name(data)), "Err": ""},
        "/Dockvols.Resize": resize,
        "/VolumeDriver.List": lambda data: {"Volumes": manager.list(), "Err": ""},
    }


def create_app(manager: VolumeManager, metrics: PluginMetrics | None = None) -> Flask:
    app = Flask("dockvols")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    if metrics is not None:
        metrics.instrument(app)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:  # werkzeug: 404, 405, 413
            return jsonify(Err=f"{exc}"), code
        log.exception("internal error on %s", request.path)
        g.dockvols_error = "crash"
        return jsonify(Err=f"dockvols plugin internal error on {request.path}: "
                           f"{type(exc).__name__}; see the plugin log"), 500

    app.wsgi_app = VolumeDriverDispatch(  # type: ignore[method-assign]
        volume_driver_routes(manager), app.wsgi_app, metrics)
    return app
