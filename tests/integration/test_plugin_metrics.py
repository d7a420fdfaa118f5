"""The real plugin's /metrics, on its VolumeDriver socket and on a loopback address, while
real containers use real volumes."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bench.processes import Daemon, wait_for
from dockvols_common.http_client import UnixHTTPConnection

from .conftest import PLUGIN_SOCKET, Docker, make_volume, restart_plugin_and_wait_for_recovery

MB = 1024 * 1024


def parse(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def scrape_socket() -> dict:
    conn = UnixHTTPConnection(PLUGIN_SOCKET, 10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        return parse(resp.read().decode())
    finally:
        conn.close()


def calls(samples: dict, endpoint: str, outcome: str) -> float:
    return samples.get(("dockvols_plugin_calls_seconds_count",
                        (("endpoint", endpoint), ("outcome", outcome))), 0)


def test_a_mounted_volume_reports_space_and_inodes_and_calls_are_counted(
        dv: Docker, busybox: str) -> None:
    make_volume(dv, "metered", "size=200mb")
    dv("volume", "create", "-d", dv.driver, "-o", "size=lots", "metered-bad", check=False)
    dv("run", "-d", "--name", "metered-user", "-v", "metered:/data", busybox, "sh", "-c",
       "dd if=/dev/zero of=/data/f bs=1M count=24 && sync && sleep 600")
    labels = (("datastore", "datastore1"), ("volume", "metered@datastore1"))
    try:
        wait_for(lambda: scrape_socket().get(("kubelet_volume_stats_used_bytes", labels), 0)
                 >= 24 * MB, 30, "the 24 MB file to show as used")
        s = scrape_socket()
        capacity = s[("kubelet_volume_stats_capacity_bytes", labels)]
        assert 150 * MB < capacity <= 200 * MB  # ext4 on a 200mb disk, less its metadata
        assert s[("kubelet_volume_stats_available_bytes", labels)] < capacity - 24 * MB
        assert s[("kubelet_volume_stats_inodes", labels)] > \
            s[("kubelet_volume_stats_inodes_free", labels)] > 0
        assert s[("kubelet_volume_stats_inodes_used", labels)] >= 2  # root dir, lost+found, f
        assert calls(s, "VolumeDriver.Create", "ok") >= 1
        assert calls(s, "VolumeDriver.Mount", "ok") >= 1
        assert calls(s, "VolumeDriver.Create", "InvalidOption") >= 1
    finally:
        dv("rm", "-f", "metered-user")
    s = scrape_socket()
    assert ("kubelet_volume_stats_capacity_bytes", labels) not in s  # unmounted: gone
    assert calls(s, "VolumeDriver.Unmount", "ok") >= 1


def test_metrics_are_also_served_on_a_loopback_address_when_asked(
        dv: Docker, plugin: Daemon) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    restart_plugin_and_wait_for_recovery(plugin, {"DOCKVOLS_METRICS_ADDRESS":
                                                  f"127.0.0.1:{port}"})
    try:
        make_volume(dv, "metered-tcp")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            s = parse(resp.read().decode())
        assert calls(s, "VolumeDriver.Create", "ok") >= 1
        assert s[("dockvols_plugin_build_info", (("version", "0.1.0"),))] == 1
    finally:
        restart_plugin_and_wait_for_recovery(plugin)
