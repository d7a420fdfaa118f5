"""The VolumeDriver HTTP endpoints: parse, call the volume manager, answer. One error
boundary turns every failure into ``{"Err": "..."}``."""

from __future__ import annotations

import json
import logging

from flask import Flask, g, jsonify, request

from .errors import BadRequest, PluginError
from .metrics import PluginMetrics
from .volume_manager import VolumeManager

log = logging.getLogger("dockvols.plugin.app")
MAX_BODY = 256 * 1024


def _body() -> dict:
    # dockerd sends no Content-Type, and an empty body for Activate or a retry.
    if (request.content_length or 0) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes")
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError as exc:
        raise BadRequest("request body is JSON nested too deeply") from exc
    if data is None:
        if request.get_data(cache=True).strip():
            raise BadRequest("request body is not valid JSON")
        return {}
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
    _refuse_lone_surrogates(data)
    return data


def _refuse_lone_surrogates(data: dict) -> None:
    """JSON may escape half a UTF-16 pair ("\\ud800"); no name, ID or option can hold one
    (it cannot be encoded to send on, to log or to put in a path)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode("ascii")
        raise BadRequest(f"request body holds the lone surrogate {bad!r}, which is not a "
                         "Unicode character: names, IDs and options must be valid "
                         "UTF-8 text") from exc


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


def create_app(manager: VolumeManager, metrics: PluginMetrics | None = None) -> Flask:
    app = Flask("dockvols")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    if metrics is not None:
        metrics.instrument(app)

    @app.errorhandler(PluginError)
    def plugin_error(exc: PluginError):  # type: ignore[no-untyped-def]
        g.dockvols_error = exc.code  # the outcome label of the call's metric
        return jsonify(Err=exc.message), 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:  # werkzeug: 404, 405, 413
            return jsonify(Err=f"{exc}"), code
        log.exception("internal error on %s", request.path)
        g.dockvols_error = "crash"
        return jsonify(Err=f"dockvols plugin internal error on {request.path}: "
                           f"{type(exc).__name__}; see the plugin log"), 500

    @app.post("/Plugin.Activate")
    def activate():  # type: ignore[no-untyped-def]
        return jsonify(Implements=["VolumeDriver"])

    @app.post("/VolumeDriver.Capabilities")
    def capabilities():  # type: ignore[no-untyped-def]
        return jsonify(Capabilities={"Scope": "global"})

    @app.post("/VolumeDriver.Create")
    def create():  # type: ignore[no-untyped-def]
        data = _body()
        opts = data.get("Opts")
        if opts is not None and not isinstance(opts, dict):
            raise BadRequest(f"Opts must be a map, got {type(opts).__name__}")
        manager.create(_name(data), opts or {})
        return jsonify(Err="")

    @app.post("/VolumeDriver.Remove")
    def remove():  # type: ignore[no-untyped-def]
        manager.remove(_name(_body()))
        return jsonify(Err="")

    @app.post("/VolumeDriver.Mount")
    def mount():  # type: ignore[no-untyped-def]
        data = _body()
        return jsonify(Mountpoint=manager.mount(_name(data), _mount_id(data)), Err="")

    @app.post("/VolumeDriver.Unmount")
    def unmount():  # type: ignore[no-untyped-def]
        data = _body()
        manager.unmount(_name(data), _mount_id(data))
        return jsonify(Err="")

    @app.post("/VolumeDriver.Path")
    def path():  # type: ignore[no-untyped-def]
        return jsonify(Mountpoint=manager.path(_name(_body())), Err="")

    @app.post("/VolumeDriver.Get")
    def get():  # type: ignore[no-untyped-def]
        return jsonify(Volume=manager.get(_name(_body())), Err="")

    # Not a VolumeDriver call (dockerd has no resize verb): the guest command
    # `dockvols volume resize` asks this on the plugin's own socket.
    @app.post("/Dockvols.Resize")
    def resize():  # type: ignore[no-untyped-def]
        data = _body()
        size = data.get("Size")
        if not isinstance(size, str) or not size:
            raise BadRequest(f"missing or invalid Size {size!r}: use X[mb|gb|tb], e.g. 20gb")
        return jsonify(**manager.resize(_name(data), size), Err="")

    @app.post("/VolumeDriver.List")
    def list_volumes():  # type: ignore[no-untyped-def]
        return jsonify(Volumes=manager.list(), Err="")

    return app
