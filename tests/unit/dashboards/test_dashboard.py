"""The Grafana dashboard asks only for metrics dockvols exports: every metric name in every
query is one that esx_service, dockvols-web or the plugin really write (read from their own
expositions, not from a list kept by hand)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from admin_web.app import create_app as create_web_app
from admin_web.settings import WebSettings
from esx_service.admin.inventory import Quota, Snapshot, families
from esx_service.backends.base import DatastoreInfo
from esx_service.metadata import ATTACHED, VolumeMeta
from esx_service.metrics import render
from esx_service.options import VolumeOptions
from esx_service.telemetry import Telemetry
from plugin.metrics import PluginMetrics

DASHBOARD = Path(__file__).resolve().parents[3] / "dashboards" / "dockvols.json"
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",),
            "gauge": ("",), "summary": ("_sum", "_count"), "info": ("_info",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "le", "inf", "nan"}


def names_in(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in SUFFIXES[family.type]}
        names |= {s.name for s in family.samples}
    return names


def exported() -> set[str]:
    telemetry = Telemetry("local")
    telemetry.ops.observe(0.1, op="create", backend="local", outcome="ok", fault="")
    meta = VolumeMeta(name="db", datastore="ds1", vmgroup="g", options=VolumeOptions(),
                      created_by="vm1", docker_name="db").evolve(status=ATTACHED,
                                                                 attached_to="vm1")
    snap = Snapshot("local", True, datastores=[DatastoreInfo("ds1", "local", 10, 5, "")],
                    volumes=[(meta, 1)], quotas=[Quota("g", "ds1", True, 100, 10)])
    esx = telemetry.registry.render() + render(families(snap))

    class Source:
        def text(self, path: str) -> str:
            return ""

        def json(self, path: str) -> dict:
            return {}

    web = create_web_app(WebSettings(), Source()).test_client().get("/metrics")
    plugin = PluginMetrics(lambda: ["/"], os.statvfs).exposition().decode()
    return names_in(esx) | names_in(web.get_data(as_text=True)) | names_in(plugin)


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that name series: not functions, keywords,
    label names in matchers or grouping clauses, durations, strings or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)          # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                   # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                  # range durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = match.group(), expr[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        found.add(word)
    return found


def test_the_dashboard_has_queries_for_what_operators_watch() -> None:
    titles = " | ".join(t for t, _ in queries())
    for needed in ("Operations per second", "Error ratio", "p90", "p99",
                   "Capacity per datastore", "Used % per volume"):
        assert needed in titles
    used = next(p for p in json.loads(DASHBOARD.read_text())["panels"]
                if p["title"].startswith("Used % per volume"))
    steps = used["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 80]


@pytest.mark.parametrize(("title", "expr"), queries())
def test_every_query_names_only_metrics_dockvols_exports(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr}"
    missing = names - exported()
    assert not missing, f"{title}: {sorted(missing)} are not exported by dockvols"


def test_the_name_extraction_catches_a_metric_dockvols_does_not_export() -> None:
    assert metric_names('sum by (op) (rate(node_cpu_seconds_total{mode="idle"}[5m]))') == {
        "node_cpu_seconds_total"}
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m]))) / y") == {
        "x_bucket", "y"}
