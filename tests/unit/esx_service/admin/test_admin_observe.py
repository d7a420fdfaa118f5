"""The admin socket's metrics, operations and inventory routes on a real unix socket."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockvols_common.http_client import UnixHTTPConnection, request
from esx_service.admin.admin_api import AdminApi
from esx_service.admin.db import AdminDb
from esx_service.admin.db_access import DbAccess
from esx_service.admin.importer import Importer
from esx_service.admin.inventory import InventoryCollector, Snapshot, families
from esx_service.admin.observe import ObserveRoutes
from esx_service.admin.service import AdminService
from esx_service.api import Api
from esx_service.backends.local import LocalBackend
from esx_service.errors import DockvolsError
from esx_service.options import MB
from esx_service.server import UnixApiServer
from esx_service.telemetry import Telemetry
from esx_service.volumes import VolumeService

from .conftest import FakeLosetup


class Observed:
    def __init__(self, root: Path, short_dir: str, db: AdminDb) -> None:
        self.backend = LocalBackend({"ds1": str(root / "ds1"), "ds2": str(root / "ds2")},
                                    run=FakeLosetup())
        self.telemetry = Telemetry("local")
        self.db = db
        self.service = VolumeService(self.backend, "ds1", DbAccess(db),
                                     observer=self.telemetry)
        self.admin = AdminApi(AdminService(self.service, db),
                              Importer(self.service, self.backend, db),
                              ObserveRoutes(self.service, self.backend, db, self.telemetry))
        self.socket = os.path.join(short_dir, "admin.sock")
        self.server = UnixApiServer(self.socket, self.admin, "admin", mode=0o600)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def get(self, path: str) -> tuple[int, str, bytes]:
        resp, body = request(UnixHTTPConnection(self.socket, 600), "GET", "/v1/admin/" + path)
        return resp.status, resp.getheader("Content-Type") or "", body

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, ctype, body = self.get("metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(body.decode()) for s in f.samples}


@pytest.fixture
def obs(tmp_path: Path, short_dir: str, db: AdminDb) -> Iterator[Observed]:
    stack = Observed(tmp_path, short_dir, db)
    yield stack
    stack.server.stop()


def test_metrics_count_volumes_capacity_and_attachments_per_datastore_and_vmgroup(obs) -> None:
    obs.db.create_vmgroup("team-a", "", "ds2")
    obs.db.set_access("team-a", "ds2", True, 0, 1024)
    obs.db.add_vms("team-a", ["vm-a"])
    obs.service.create("vm-x", "db", {"size": "200mb"})
    obs.service.create("vm-x", "logs", {"size": "100mb", "diskformat": "zeroedthick"})
    obs.service.create("vm-a", "web", {"size": "300mb"})
    obs.service.attach("vm-x", "db")

    m = obs.metrics()

    assert m[("dockvols_volumes", (("datastore", "ds1"), ("vmgroup", "_DEFAULT")))] == 2
    assert m[("dockvols_volumes", (("datastore", "ds2"), ("vmgroup", "team-a")))] == 1
    assert m[("dockvols_volume_capacity_bytes",
              (("datastore", "ds1"), ("vmgroup", "_DEFAULT")))] == 300 * MB
    # the zeroedthick disk takes its 100mb now; the thin one next to nothing
    allocated = m[("dockvols_volume_allocated_bytes",
                   (("datastore", "ds1"), ("vmgroup", "_DEFAULT")))]
    assert 100 * MB <= allocated < 110 * MB
    assert m[("dockvols_vmgroup_quota_limit_bytes",
              (("datastore", "ds2"), ("vmgroup", "team-a")))] == 1024 * MB
    assert m[("dockvols_vmgroup_quota_used_bytes",
              (("datastore", "ds2"), ("vmgroup", "team-a")))] == 300 * MB
    assert m[("dockvols_vm_attached_disks", (("vm", "vm-x"),))] == 1
    assert m[("dockvols_backend_connected", (("backend", "local"),))] == 1
    free = [v for (name, labels), v in m.items() if name == "dockvols_datastore_free_bytes"]
    assert len(free) == 2 and all(v > 0 for v in free)
    assert m[("dockvols_build_info", (("backend", "local"), ("version", "0.1.0")))] == 1
    assert m[("dockvols_volume_ops_seconds_count", (("backend", "local"), ("fault", ""),
                                                    ("op", "create"), ("outcome", "ok")))] == 3


def test_operations_list_recent_ones_with_outcome_and_error(obs) -> None:
    obs.service.create("vm-x", "db", {})
    with pytest.raises(DockvolsError):
        obs.service.create("vm-x", "db2", {"fstype": "ntfs"})
    status, ctype, body = obs.get("operations?limit=5")
    reply = json.loads(body)
    assert status == 200 and ctype == "application/json" and reply["running"] == []
    assert [(r["op"], r["volume"], r["outcome"], r["fault"]) for r in reply["recent"]] == [
        ("create", "db2", "error", "InvalidOption"), ("create", "db", "ok", "")]
    assert "ntfs" in reply["recent"][0]["error"]
    status, _, body = obs.get("operations?limit=0")
    assert status == 400 and "limit must be a number from 1 to 200" in body.decode()


def test_inventory_says_backend_health_datastores_and_quota_use(obs) -> None:
    obs.db.create_vmgroup("team-a", "", "ds2")
    obs.db.set_access("team-a", "ds2", True, 0, 1024)
    status, _, body = obs.get("inventory")
    reply = json.loads(body)
    assert status == 200
    assert reply["backend"] == {"name": "local", "connected": True, "error": ""}
    assert [d["name"] for d in reply["datastores"]] == ["ds1", "ds2"]
    assert all(d["capacity_bytes"] >= d["free_bytes"] > 0 for d in reply["datastores"])
    assert {"vmgroup": "team-a", "datastore": "ds2", "allow_create": True,
            "limit_mb": 1024, "used_mb": 0} in reply["quotas"]


def test_no_vm_facing_listener_serves_metrics_or_operations(obs) -> None:
    api = Api(obs.service)
    for path in ("/v1/admin/metrics", "/v1/admin/operations", "/v1/admin/inventory",
                 "/metrics"):
        assert api.handle("GET", path, b"", "vm1")[0] == 404


def test_an_unreachable_backend_is_reported_not_raised(obs, monkeypatch) -> None:
    def down() -> list:
        raise DockvolsError("cannot reach vSphere at https://vc:443/sdk: refused")

    monkeypatch.setattr(obs.backend, "datastores", down)
    reply = json.loads(obs.get("inventory")[2])
    assert reply["backend"]["connected"] is False and "refused" in reply["backend"]["error"]


def test_the_inventory_collector_reads_at_most_once_per_ttl_and_survives_a_failure() -> None:
    now = [0.0]
    calls: list[int] = []

    def take() -> Snapshot:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("listing failed")
        return Snapshot("local", True)

    collector = InventoryCollector(take, ttl=15, clock=lambda: now[0])
    first = collector()
    now[0] = 10
    assert collector() is first and len(calls) == 1
    now[0] = 16
    second = collector()
    assert len(calls) == 2
    now[0] = 40
    assert collector() is second  # the failure is logged; the last families are served
    assert [f.name for f in families(Snapshot("local", False))][-1] == \
        "dockvols_backend_connected"


def test_metrics_show_a_grown_volumes_capacity_and_quota_use(obs) -> None:
    obs.db.create_vmgroup("team-a", "", "ds2")
    obs.db.set_access("team-a", "ds2", True, 0, 2048)
    obs.db.add_vms("team-a", ["vm-a"])
    obs.service.create("vm-a", "web", {"size": "300mb"})
    obs.service.resize("vm-a", "web", "1gb")
    m = obs.metrics()
    labels = (("datastore", "ds2"), ("vmgroup", "team-a"))
    assert m[("dockvols_volume_capacity_bytes", labels)] == 1024 * MB
    assert m[("dockvols_vmgroup_quota_used_bytes", labels)] == 1024 * MB
    assert m[("dockvols_volume_ops_seconds_count", (("backend", "local"), ("fault", ""),
                                                    ("op", "resize"), ("outcome", "ok")))] == 1
