"""The plugin's metrics: calls by endpoint and outcome, kubelet-style volume stats, reconcile
actions; read back with prometheus_client's parser from GET /metrics."""

from __future__ import annotations

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin.app import create_app
from plugin.metrics import PluginMetrics
from plugin.settings import SettingsError, load_settings

MB = 1024 * 1024


def fake_statvfs(path: str) -> os.statvfs_result:
    if path.endswith("gone@ds1"):
        raise FileNotFoundError(path)
    # 4 KiB blocks: 25600 total (100 MiB), 5120 free, 4096 available; 6400 inodes, 6000 free
    return os.statvfs_result((4096, 4096, 25600, 5120, 4096, 6400, 6000, 6000, 0, 255))


@pytest.fixture
def metrics(rig) -> PluginMetrics:
    return PluginMetrics(lambda: [os.path.join(rig.mount_root, "db@ds1"),
                                  os.path.join(rig.mount_root, "gone@ds1")], fake_statvfs)


def scrape(client) -> dict:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(resp.get_data(as_text=True))
            for s in f.samples}


def call(client, endpoint: str, body: object) -> int:
    return client.post(endpoint, data=json.dumps(body).encode()).status_code


def count(samples: dict, endpoint: str, outcome: str) -> float:
    return samples.get(("dockvols_plugin_calls_seconds_count",
                        (("endpoint", endpoint), ("outcome", outcome))), 0)


def test_volumedriver_calls_are_counted_by_endpoint_and_outcome(rig, metrics) -> None:
    client = create_app(rig.manager, metrics).test_client()
    assert call(client, "/VolumeDriver.Create", {"Name": "db", "Opts": {"size": "1gb"}}) == 200
    assert call(client, "/VolumeDriver.Create", {"Name": "x", "Opts": {"size": "1zb"}}) == 500
    assert call(client, "/VolumeDriver.Get", {"Name": 7}) == 500
    assert call(client, "/VolumeDriver.Nope", {}) == 404
    client.get("/metrics")  # a scrape is not a VolumeDriver call

    s = scrape(client)

    assert count(s, "VolumeDriver.Create", "ok") == 1
    assert count(s, "VolumeDriver.Create", "InvalidOption") == 1  # the service's code
    assert count(s, "VolumeDriver.Get", "BadRequest") == 1
    assert count(s, "other", "http_404") == 1
    assert not any(labels and ("endpoint", "metrics") in labels for _, labels in s)
    assert s[("dockvols_plugin_calls_seconds_bucket",
              (("endpoint", "VolumeDriver.Create"), ("le", "600.0"), ("outcome", "ok")))] == 1


def test_each_mounted_volume_has_kubelet_style_space_and_inode_stats(rig, metrics) -> None:
    s = scrape(create_app(rig.manager, metrics).test_client())
    labels = (("datastore", "ds1"), ("volume", "db@ds1"))
    assert s[("kubelet_volume_stats_capacity_bytes", labels)] == 100 * MB
    assert s[("kubelet_volume_stats_used_bytes", labels)] == 80 * MB
    assert s[("kubelet_volume_stats_available_bytes", labels)] == 16 * MB
    assert s[("kubelet_volume_stats_inodes", labels)] == 6400
    assert s[("kubelet_volume_stats_inodes_free", labels)] == 6000
    assert s[("kubelet_volume_stats_inodes_used", labels)] == 400
    # a volume unmounted between the listing and its statvfs is left out, not an error
    assert not any(("volume", "gone@ds1") in labels for _, labels in s)


def test_reconcile_reports_are_counted_by_phase_and_action(rig, metrics) -> None:
    metrics.record_reconcile("recovery", {"unmounted": 2, "remounted": 0, "detached": 1})
    metrics.record_reconcile("reconcile", {"unmounted": 1})
    s = scrape(create_app(rig.manager, metrics).test_client())
    total = "dockvols_plugin_reconcile_actions_total"
    assert s[(total, (("action", "unmounted"), ("phase", "recovery")))] == 2
    assert s[(total, (("action", "detached"), ("phase", "recovery")))] == 1
    assert s[(total, (("action", "unmounted"), ("phase", "reconcile")))] == 1
    assert (total, (("action", "remounted"), ("phase", "recovery"))) not in s


def test_the_extra_metrics_address_must_be_loopback() -> None:
    assert load_settings({}).metrics_address is None
    assert load_settings({"DOCKVOLS_METRICS_ADDRESS": "127.0.0.1:9441"}).metrics_address == (
        "127.0.0.1", 9441)
    assert load_settings({"DOCKVOLS_METRICS_ADDRESS": "[::1]:9441"}).metrics_address == (
        "::1", 9441)
    for bad in ("0.0.0.0:9441", "10.1.2.3:9441", "127.0.0.1", "127.0.0.1:0", "host:9441"):
        with pytest.raises(SettingsError, match="a loopback HOST:PORT"):
            load_settings({"DOCKVOLS_METRICS_ADDRESS": bad})
