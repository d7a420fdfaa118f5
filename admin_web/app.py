"""The read-only admin page and the host side's ``/metrics``, as a flask app.

Everything comes from esx_service's admin socket at request time; nothing is stored here.
``/metrics`` is esx_service's own exposition followed by this process's few metrics
(whether the service answered), so a scrape still answers when the service is down.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Flask, Response, abort, render_template, request
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from dockvols_common.sizes import rounded_size_text, size_text

from . import view
from .settings import WebSettings
from .source import AdminSource, SourceError

log = logging.getLogger("dockvols.web")
PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def create_app(settings: WebSettings, source: AdminSource) -> Flask:
    app = Flask("admin_web")
    registry = CollectorRegistry()
    service_up = Gauge("dockvols_service_up", "1 when esx_service's admin socket answered "
                       "the last scrape", registry=registry)
    scrape_seconds = Gauge("dockvols_service_scrape_seconds",
                           "Seconds the last read of esx_service's metrics took",
                           registry=registry)

    @app.before_request
    def check_token() -> None:
        if settings.token is None:
            return
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {settings.token}".encode()):
            abort(401)

    @app.after_request
    def no_framing(response: Response) -> Response:
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        started = time.monotonic()
        try:
            text = source.text("metrics")
            service_up.set(1)
        except SourceError as exc:
            log.warning("metrics: %s", exc)
            text = ""
            service_up.set(0)
        scrape_seconds.set(time.monotonic() - started)
        return Response(text + generate_latest(registry).decode(), mimetype=None,
                        content_type=PROM_TEXT)

    @app.get("/")
    def index() -> str:
        filters = view.Filters.from_query(request.args)
        error = None
        status: dict = {}
        inventory: dict = {"datastores": [], "quotas": [], "backend": {}}
        volumes: list[dict] = []
        groups: list[dict] = []
        ops: dict = {"running": [], "recent": []}
        try:
            status = source.json("status")
            inventory = source.json("inventory")
            volumes = source.json("volumes")["volumes"]
            groups = source.json("vmgroups")["vmgroups"]
            ops = source.json("operations?limit=50")
        except SourceError as exc:
            error = str(exc)
        return render_template(
            "index.html", error=error, status=status, backend=inventory.get("backend", {}),
            datastores=view.datastore_views(inventory, volumes, filters),
            volume_count=len(volumes), filters=filters,
            choices=view.choices(volumes, inventory, groups),
            groups=view.quota_rows(groups, inventory.get("quotas", [])),
            running=ops["running"], recent=ops["recent"], sorts=list(view.SORTS),
            size=rounded_size_text, capacity=size_text, duration=view.duration,
            progress_pct=view.progress_pct,
            now=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    @app.get("/healthz")
    def healthz() -> tuple[dict, int]:
        try:
            source.json("status")
        except SourceError as exc:
            return {"ok": False, "error": str(exc)}, 503
        return {"ok": True}, 200

    return app
