"""The plugin's Prometheus metrics (prometheus_client: the guest is not bound to ESXi's
stdlib): VolumeDriver calls by endpoint and outcome, per mounted volume the space and inodes
Kubernetes users know as ``kubelet_volume_stats_*``, and reconcile actions.

One registry per process (not prometheus_client's global one), served at ``GET /metrics``
on the plugin's own socket and, if ``DOCKVOLS_METRICS_ADDRESS`` is set, on that loopback
address.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from dockvols_common.metrics import CONTENT_TYPE, OP_BUCKETS

from . import __version__

ENDPOINTS = frozenset({
    "Plugin.Activate", "VolumeDriver.Capabilities", "VolumeDriver.Create",
    "VolumeDriver.Remove", "VolumeDriver.Mount", "VolumeDriver.Unmount", "VolumeDriver.Path",
    "VolumeDriver.Get", "VolumeDriver.List", "Dockvols.Resize"})
# (metric suffix, help, value of a statvfs result)
_STATS: list[tuple[str, str, Callable[[os.statvfs_result], int]]] = [
    ("capacity_bytes", "Capacity of the volume's filesystem in bytes",
     lambda s: s.f_blocks * s.f_frsize),
    ("available_bytes", "Bytes available to unprivileged users on the volume",
     lambda s: s.f_bavail * s.f_frsize),
    ("used_bytes", "Bytes used on the volume", lambda s: (s.f_blocks - s.f_bfree) * s.f_frsize),
    ("inodes", "Inodes of the volume's filesystem", lambda s: s.f_files),
    ("inodes_free", "Free inodes on the volume", lambda s: s.f_ffree),
    ("inodes_used", "Used inodes on the volume", lambda s: s.f_files - s.f_ffree),
]


class VolumeStats:
    """A collector: for each volume mounted under the mount root, ``statvfs`` at scrape."""

    def __init__(self, mounted: Callable[[], Iterable[str]],
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self._mounted = mounted
        self._statvfs = statvfs

    def collect(self) -> Iterator[Metric]:
        families = {suffix: GaugeMetricFamily(f"kubelet_volume_stats_{suffix}", text,
                                              labels=["volume", "datastore"])
                    for suffix, text, _ in _STATS}
        for path in sorted(set(self._mounted())):
            try:
                st = self._statvfs(path)
            except OSError:  # unmounted between the listing and now
                continue
            canonical = os.path.basename(path)
            datastore = canonical.rpartition("@")[2] if "@" in canonical else ""
            for suffix, _, value in _STATS:
                families[suffix].add_metric([canonical, datastore], value(st))
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values only at scrape time


class PluginMetrics:
    def __init__(self, mounted: Callable[[], Iterable[str]],
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self.registry = CollectorRegistry()
        self.calls = Histogram(
            "dockvols_plugin_calls_seconds", "VolumeDriver calls from dockerd by endpoint and "
            "outcome (ok, or the error code), in seconds", ["endpoint", "outcome"],
            buckets=OP_BUCKETS, registry=self.registry)
        self.reconcile_actions = Counter(
            "dockvols_plugin_reconcile_actions", "What recovery (at start) and the periodic "
            "reconcile did, by phase and action (unmounted, detached, remounted, recounted...)",
            ["phase", "action"], registry=self.registry)
        Gauge("dockvols_plugin_build_info", "dockvols version of this plugin", ["version"],
              registry=self.registry).labels(version=__version__).set(1)
        self.registry.register(VolumeStats(mounted, statvfs))

    def record_reconcile(self, phase: str, report: dict[str, int]) -> None:
        """Count a recovery or reconcile pass's report (``{action: how many}``)."""
        for action, n in report.items():
            if n:
                self.reconcile_actions.labels(phase=phase, action=action).inc(n)

    def observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One VolumeDriver call (plugin/dispatch.py times them)."""
        self.calls.labels(endpoint=endpoint if endpoint in ENDPOINTS else "other",
                          outcome=outcome).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def instrument(self, app: Flask) -> None:
        """Time every request flask answers (what plugin/dispatch.py does not: unknown
        paths) by endpoint and outcome, and serve ``GET /metrics``."""

        @app.before_request
        def started() -> None:
            g.dockvols_started = time.monotonic()

        @app.after_request
        def observed(response: Response) -> Response:
            endpoint = request.path.lstrip("/")
            if endpoint == "metrics":
                return response
            if response.status_code == 200:
                outcome = "ok"
            else:  # the error handlers name the error; werkzeug's 404/405/413 do not
                outcome = g.get("dockvols_error") or f"http_{response.status_code}"
            self.observe(endpoint, outcome,
                         time.monotonic() - g.get("dockvols_started", time.monotonic()))
            return response

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(self.exposition(), content_type=CONTENT_TYPE)
