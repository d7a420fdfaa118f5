"""Operations as metrics and as the ring of recent operations; progress of long work."""

from __future__ import annotations

import pytest

from esx_service.errors import BackendError, DockvolsError
from esx_service.telemetry import Telemetry, report_progress
from esx_service.volumes import VolumeService
from tests.fakes import FakeBackend


@pytest.fixture
def observed() -> tuple[VolumeService, Telemetry, FakeBackend]:
    backend = FakeBackend()
    telemetry = Telemetry(backend.name)
    return VolumeService(backend, observer=telemetry), telemetry, backend


def test_each_operation_is_counted_by_op_backend_outcome_and_fault(observed) -> None:
    service, telemetry, _ = observed
    service.create("vm1", "db", {"size": "1gb"})
    service.get("vm1", "db")
    with pytest.raises(DockvolsError):
        service.create("vm1", "bad", {"size": "lots"})
    ops = telemetry.ops
    assert ops.count(op="create", backend="fake", outcome="ok", fault="") == 1
    assert ops.count(op="get", backend="fake", outcome="ok", fault="") == 1
    assert ops.count(op="create", backend="fake", outcome="error", fault="InvalidOption") == 1
    assert telemetry.in_flight.family().samples[0][2] == 0


def test_recent_operations_keep_outcome_and_error_newest_first_without_reads(observed) -> None:
    service, telemetry, _ = observed
    service.create("vm1", "db", {})
    service.list("vm1")
    with pytest.raises(DockvolsError):
        service.remove("vm1", "nothere")
    recent = telemetry.recent()
    assert [(r["op"], r["volume"], r["outcome"]) for r in recent] == [
        ("remove", "nothere", "error"), ("create", "db", "ok")]
    assert recent[0]["fault"] == "VolumeNotFound"
    assert "nothere" in recent[0]["error"]
    assert recent[1]["vm"] == "vm1" and recent[1]["duration_ms"] >= 0
    assert recent[1]["started_at"].endswith("Z")


def test_a_crash_is_recorded_with_its_exception_type(observed) -> None:
    service, telemetry, backend = observed
    backend.fail_before["create_disk"] = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        service.create("vm1", "db", {})
    assert telemetry.ops.count(op="create", backend="fake", outcome="crash",
                               fault="RuntimeError") == 1
    assert telemetry.recent()[0]["error"] == "boom"


def test_the_ring_of_recent_operations_is_bounded() -> None:
    backend = FakeBackend()
    telemetry = Telemetry("fake", recent=3)
    service = VolumeService(backend, observer=telemetry)
    for i in range(5):
        service.create("vm1", f"v{i}", {})
    assert [r["volume"] for r in telemetry.recent()] == ["v4", "v3", "v2"]


def test_progress_of_a_running_operation_is_visible_until_it_ends(observed) -> None:
    service, telemetry, backend = observed
    seen: list[list[dict]] = []

    def slow_disk(*args: object, **kwargs: object) -> str:
        report_progress(300, 1000, "bytes")
        seen.append(telemetry.running())
        return "uuid-1"

    backend.create_disk = slow_disk  # type: ignore[method-assign]
    service.create("vm1", "big", {"diskformat": "eagerzeroedthick"})
    assert seen[0][0]["op"] == "create" and seen[0][0]["outcome"] == "running"
    assert seen[0][0]["progress"] == {"done": 300, "total": 1000, "unit": "bytes"}
    assert telemetry.running() == []
    report_progress(1, 2, "bytes")  # outside any operation: nothing to report into


def test_vsphere_api_calls_are_timed_by_method() -> None:
    telemetry = Telemetry("vsphere")
    telemetry.api_call("RetrievePropertiesEx", 0.02)
    telemetry.api_call("RetrievePropertiesEx", 0.03)
    telemetry.api_call("folder:GET", 0.5)
    assert telemetry.api_calls.count(method="RetrievePropertiesEx") == 2
    assert telemetry.api_calls.count(method="folder:GET") == 1


def test_errors_of_the_backend_keep_their_message(observed) -> None:
    service, telemetry, backend = observed
    backend.fail_before["create_disk"] = BackendError("datastore ds1 is read-only")
    with pytest.raises(BackendError):
        service.create("vm1", "db", {})
    assert telemetry.recent()[0]["error"] == "datastore ds1 is read-only"
