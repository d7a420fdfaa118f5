"""The admin page and /metrics against a scripted admin API (flask test client)."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from admin_web.app import create_app
from admin_web.settings import WebSettings
from admin_web.source import SourceError
from admin_web.view import Filters, datastore_views, quota_rows

GB = 1024 ** 3


def vol(name: str, ds: str, mb: int, group: str = "_DEFAULT", vm: str | None = None,
        creator: str = "vm-1", created: str = "2026-11-30T10:00:00Z") -> dict:
    return {"volume": name, "name": f"{name}@{ds}", "datastore": ds, "vmgroup": group,
            "capacity_mb": mb, "allocated_mb": mb / 10, "fstype": "ext4", "diskformat": "thin",
            "access": "read-write", "status": "attached" if vm else "detached",
            "attached_to": vm, "created_by": creator, "created_at": created}


VOLUMES = [vol("db", "ds1", 200, vm="vm-2"), vol("logs", "ds1", 1024, created="2026-11-29T0"),
           vol("web", "ds2", 2048, group="team-a", creator="vm-7")]
INVENTORY = {"backend": {"name": "local", "connected": True, "error": ""},
             "datastores": [{"name": "ds1", "type": "local", "capacity_bytes": 100 * GB,
                             "free_bytes": 15 * GB, "url": "", "volumes": 2},
                            {"name": "ds2", "type": "local", "capacity_bytes": 50 * GB,
                             "free_bytes": 40 * GB, "url": "", "volumes": 1}],
             "quotas": [{"vmgroup": "team-a", "datastore": "ds2", "allow_create": True,
                         "limit_mb": 10240, "used_mb": 2048}]}
GROUPS = [{"name": "_DEFAULT", "vms": [], "volumes": 2, "default_datastore": None},
          {"name": "team-a", "vms": ["vm-7"], "volumes": 1, "default_datastore": "ds2"}]
OPS = {"running": [{"id": "op-9", "op": "create", "volume": "big", "vm": "vm-1",
                    "started_at": "2026-11-30T10:01:00Z", "duration_ms": None,
                    "outcome": "running", "fault": "", "error": "",
                    "progress": {"done": 25, "total": 100, "unit": "percent"}}],
       "recent": [{"id": "op-8", "op": "create", "volume": "x", "vm": "vm-1",
                   "started_at": "2026-11-30T10:00:00Z", "duration_ms": 3.2,
                   "outcome": "error", "fault": "InvalidOption", "error": "invalid size '2zb'",
                   "progress": None}]}
METRICS = "# HELP dockvols_volumes Volumes\n# TYPE dockvols_volumes gauge\n" \
          'dockvols_volumes{datastore="ds1",vmgroup="_DEFAULT"} 2.0\n'


class FakeSource:
    def __init__(self, down: bool = False) -> None:
        self.down = down

    def json(self, path: str) -> dict:
        if self.down:
            raise SourceError("cannot read the dockvols admin socket /x: refused")
        return {"status": {"version": "0.1.0", "uptime_s": 3700, "backend": "local"},
                "inventory": INVENTORY, "volumes": {"volumes": VOLUMES, "totals": []},
                "vmgroups": {"vmgroups": GROUPS}, "operations?limit=50": OPS}[path]

    def text(self, path: str) -> str:
        if self.down:
            raise SourceError("down")
        return METRICS


@pytest.fixture
def client():
    return create_app(WebSettings(), FakeSource()).test_client()


def rows_of(html: str, datastore: str) -> list[str]:
    start = html.split(f'<section class="ds" data-datastore="{datastore}"')[1]
    section = start.split("</section>")[0]
    return re.findall(r'data-volume="([^"]+)"', section)


def test_the_page_lists_volumes_under_their_datastore_with_sizes(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert rows_of(html, "ds1") == ["db", "logs"] and rows_of(html, "ds2") == ["web"]
    assert '<td class="num capacity">200mb</td>' in html
    assert '<td class="num capacity">2gb</td>' in html
    assert "backend local: connected" in html
    assert "85.0% of 100gb used" in html  # ds1's bar
    assert "ds2: 2gb of 10gb" in html     # team-a's quota
    assert "invalid size &#39;2zb&#39;" in html and "error InvalidOption" in html
    assert "25.0%" in html                # the running create's progress


def test_filters_and_sort_come_from_the_query(client) -> None:
    html = client.get("/?vm=vm-7").get_data(as_text=True)
    assert rows_of(html, "ds1") == [] and rows_of(html, "ds2") == ["web"]
    html = client.get("/?datastore=ds1&sort=capacity&dir=desc").get_data(as_text=True)
    assert rows_of(html, "ds1") == ["logs", "db"]
    assert '<section class="ds" data-datastore="ds2"' not in html
    html = client.get("/?vmgroup=team-a&sort=nonsense").get_data(as_text=True)
    assert rows_of(html, "ds2") == ["web"] and rows_of(html, "ds1") == []


def test_metrics_are_the_service_exposition_plus_whether_it_answered() -> None:
    for down, up in ((False, 1.0), (True, 0.0)):
        resp = create_app(WebSettings(), FakeSource(down)).test_client().get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(resp.get_data(True))}
        assert families["dockvols_service_up"].samples[0].value == up
        assert ("dockvols_volumes" in families) is not down


def test_an_unreachable_service_shows_its_error_on_the_page() -> None:
    client = create_app(WebSettings(), FakeSource(down=True)).test_client()
    resp = client.get("/")
    assert resp.status_code == 200 and "cannot read the dockvols admin socket" in \
        resp.get_data(as_text=True)
    assert client.get("/healthz").status_code == 503


def test_with_a_token_every_path_needs_the_bearer_header() -> None:
    client = create_app(WebSettings(token="s3cret-token-0123456"), FakeSource()).test_client()
    for path in ("/", "/metrics", "/healthz"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get(path, headers={"Authorization": "Bearer s3cret-token-0123456"})
        assert ok.status_code == 200


def test_the_page_is_read_only(client) -> None:
    for method in ("post", "put", "delete"):
        assert getattr(client, method)("/").status_code == 405


def test_views_group_count_and_bound_quota_bars() -> None:
    views = datastore_views(INVENTORY, VOLUMES, Filters(vmgroup="team-a"))
    assert [(v.name, v.total_volumes, len(v.volumes)) for v in views] == [
        ("ds1", 2, 0), ("ds2", 1, 1)]
    over = quota_rows(GROUPS, [{"vmgroup": "team-a", "datastore": "ds2", "allow_create": True,
                                "limit_mb": 100, "used_mb": 150}])
    assert over[1]["quotas"][0]["pct"] == 100.0 and over[0]["quotas"] == []
