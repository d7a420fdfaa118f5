"""VolumeService's state machine, run against the in-memory FakeBackend and the real
LocalBackend (files in tmp_path, losetup played by FakeLosetup): the same contract."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from esx_service.access import OpenAccess
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import (
    AccessDenied,
    BackendError,
    DiskExists,
    InsufficientSpace,
    InvalidName,
    InvalidOption,
    ServiceStopping,
    UnknownDatastore,
    VolumeBusy,
    VolumeInUse,
    VolumeNotFound,
)
from esx_service.file_names import SAFE_STEM, file_stem
from esx_service.metadata import ATTACHED, CREATING, DETACHED, REMOVING
from esx_service.options import MB
from esx_service.volumes import VolumeService
from tests.fakes import FakeBackend, FakeLosetup


class Harness:
    """One backend plus the backend-specific questions the tests ask about it."""

    def __init__(self, kind: str, backend, losetup: FakeLosetup | None = None) -> None:
        self.kind = kind
        self.backend = backend
        self.losetup = losetup
        self.service = VolumeService(backend)

    def loc(self, name: str, datastore: str = "ds1", vmgroup: str = "_DEFAULT") -> DiskLocation:
        return DiskLocation(datastore, vmgroup, name)

    def disk_exists(self, name: str, datastore: str = "ds1") -> bool:
        loc = self.loc(name, datastore)
        if self.kind == "fake":
            return (datastore, loc.vmgroup, name) in self.backend.disks
        folder = os.path.join(self.backend._paths[datastore], loc.folder)
        return any(os.path.exists(os.path.join(folder, f))
                   for f in (f"{name}.vmdk", f"{name}-flat.vmdk"))

    def attached_devices(self, name: str, datastore: str = "ds1") -> int:
        loc = self.loc(name, datastore)
        if self.kind == "fake":
            return int(self.backend.is_attached(loc, "", None))
        return len(self.losetup.backing(os.path.join(
            self.backend._paths[datastore], loc.folder, f"{name}-flat.vmdk")))

    def fail_after(self, method: str, exc: BaseException, monkeypatch) -> None:
        """The backend does the work, then raises (e.g. the answer was lost)."""
        real: Callable = getattr(self.backend, method)

        def wrapper(*args, **kwargs):
            real(*args, **kwargs)
            raise exc
        monkeypatch.setattr(self.backend, method, wrapper)

    def guest_writes(self, name: str) -> None:
        """What a guest's mkfs leaves: data on the disk (the fake backend keeps none: only
        its record says whether the disk is blank)."""
        if self.kind == "local":
            loc = self.loc(name)
            with open(os.path.join(self.backend._paths[loc.datastore], loc.folder,
                                   f"{name}-flat.vmdk"), "r+b") as f:
                f.seek(1024)
                f.write(b"\x53\xef" * 512)

    def set_status(self, name: str, status: str) -> None:
        """The record says ``status``; a `creating` one dated before the disk, as a create
        writes it (a disk older than the record is one the create met, and stays)."""
        loc = self.loc(name)
        data = self.backend.read_metadata(loc)
        data["status"] = status
        self.backend.write_metadata(loc, data)
        if status == CREATING:
            self.date_record(name, -1.0)

    def date_record(self, name: str, seconds_after_disk: float) -> None:
        """Date the record ``seconds_after_disk`` after the disk was made."""
        loc = self.loc(name)
        if self.kind == "fake":
            disk = self.backend.disks.get((loc.datastore, loc.vmgroup, name))
            if disk is not None:
                self.backend.record_times[(loc.datastore, loc.vmgroup, name)] = (
                    disk["made_at"] + seconds_after_disk)
            return
        folder = os.path.join(self.backend._paths[loc.datastore], loc.folder)
        extent = os.path.join(folder, f"{name}-flat.vmdk")
        if os.path.exists(extent):
            made = os.stat(extent).st_mtime_ns + int(seconds_after_disk * 1e9)
            os.utime(os.path.join(folder, f"{name}.json"), ns=(made, made))


@pytest.fixture(params=["fake", "local"])
def h(request, tmp_path) -> Harness:
    if request.param == "fake":
        return Harness("fake", FakeBackend())
    losetup = FakeLosetup()
    backend = LocalBackend({"ds1": str(tmp_path / "ds1"), "ds2": str(tmp_path / "ds2")},
                           run=losetup)
    return Harness("local", backend, losetup)


# -- create ---------------------------------------------------------------------------
def test_create_answers_the_canonical_name_and_options(h):
    view = h.service.create("vm1", "db", {"size": "200mb", "fstype": "ext4"})
    assert view["name"] == "db@ds1"
    assert view["volume"] == "db"
    assert view["datastore"] == "ds1"
    assert view["vmgroup"] == "_DEFAULT"
    assert view["capacity_mb"] == 200
    assert view["status"] == DETACHED
    assert view["created_by"] == "vm1"
    assert view["docker_name"] == "db"
    assert view["disk_uuid"]
    assert h.disk_exists("db")


def test_create_is_idempotent(h):
    first = h.service.create("vm1", "db", {"size": "200mb"})
    second = h.service.create("vm2", "db", {"size": "300mb"})
    assert second["disk_uuid"] == first["disk_uuid"]
    assert second["capacity_mb"] == 200  # the existing volume, not a new one
    assert len(h.service.list("vm1")) == 1


def test_create_with_an_explicit_datastore_matches_it_case_insensitively(h):
    view = h.service.create("vm1", "db@DS2", {})
    assert view["name"] == "db@ds2"
    assert h.disk_exists("db", "ds2") and not h.disk_exists("db", "ds1")
    assert h.service.get("vm1", "db@ds2")["name"] == "db@ds2"


def test_the_same_name_on_two_datastores_is_two_volumes(h):
    a = h.service.create("vm1", "db@ds1", {})
    b = h.service.create("vm1", "db@ds2", {})
    assert a["disk_uuid"] != b["disk_uuid"]
    assert sorted(v["name"] for v in h.service.list("vm1")) == ["db@ds1", "db@ds2"]


def test_configured_default_datastore_is_used_without_at(h):
    service = VolumeService(h.backend, default_datastore="DS2")
    assert service.create("vm1", "db", {})["name"] == "db@ds2"


def test_unknown_datastore_lists_the_known_ones_and_the_default(h):
    with pytest.raises(UnknownDatastore) as err:
        h.service.create("vm1", "db@nope", {})
    assert "'nope'" in err.value.message
    assert "known datastores: ds1, ds2 (default ds1)" in err.value.message
    assert err.value.http_status == 404


def test_bad_names_and_options_create_nothing(h):
    with pytest.raises(InvalidName):
        h.service.create("vm1", "../x", {})
    with pytest.raises(InvalidOption):
        h.service.create("vm1", "db", {"size": "lots"})
    assert h.service.list("vm1") == []
    assert not h.disk_exists("db")


@pytest.mark.parametrize("exc", [BackendError("disk tool died"), KeyboardInterrupt()])
def test_a_create_disk_that_fails_after_writing_leaves_no_metadata_and_no_disk(
        h, monkeypatch, exc):
    h.fail_after("create_disk", exc, monkeypatch)
    with pytest.raises(type(exc)):
        h.service.create("vm1", "db", {})
    assert h.backend.read_metadata(h.loc("db")) is None
    assert not h.disk_exists("db")
    assert h.service.list("vm1") == []


def test_a_create_disk_that_fails_at_once_leaves_no_metadata(h, monkeypatch):
    def boom(*_a, **_k):
        raise BackendError("no such host")
    monkeypatch.setattr(h.backend, "create_disk", boom)
    with pytest.raises(BackendError):
        h.service.create("vm1", "db", {})
    assert h.backend.read_metadata(h.loc("db")) is None


def test_a_failed_final_metadata_write_leaves_no_disk(h, monkeypatch):
    real = h.backend.write_metadata
    writes = []

    def second_write_fails(loc, data, fence=None, attachment=False, before_disk=False):
        writes.append(data["status"])
        if len(writes) == 2:
            raise BackendError("datastore went read-only")
        real(loc, data, fence, attachment)
    monkeypatch.setattr(h.backend, "write_metadata", second_write_fails)
    with pytest.raises(BackendError):
        h.service.create("vm1", "db", {})
    assert writes == [CREATING, DETACHED]  # the metadata is written before the disk
    assert not h.disk_exists("db")
    assert h.backend.read_metadata(h.loc("db")) is None


def test_insufficient_space_is_refused_before_anything_is_written(h):
    free_mb = next(d for d in h.backend.datastores() if d.name == "ds1").free_bytes // MB
    too_big = f"{free_mb // 1024 + 2}gb"
    with pytest.raises(InsufficientSpace) as err:
        h.service.create("vm1", "big", {"size": too_big})
    assert "big@ds1" in err.value.message and "free" in err.value.message
    assert h.backend.read_metadata(h.loc("big")) is None
    assert not h.disk_exists("big")


def test_vsan_policy_is_refused_by_the_local_backend_only(h):
    if h.kind == "fake":
        assert h.service.create("vm1", "db", {"vsan-policy-name": "gold"})["vsan_policy_name"] \
            == "gold"
        return
    with pytest.raises(InvalidOption, match="vsphere backend"):
        h.service.create("vm1", "db", {"vsan-policy-name": "gold"})
    assert h.backend.read_metadata(h.loc("db")) is None


# -- leftovers of interrupted operations ----------------------------------------------
@pytest.mark.parametrize("status", [CREATING, REMOVING])
def test_transitional_leftovers_are_never_listed(h, status):
    h.service.create("vm1", "keep", {})
    h.service.create("vm1", "half", {})
    h.set_status("half", status)
    assert [v["name"] for v in h.service.list("vm1")] == ["keep@ds1"]


def test_a_creating_leftover_is_not_found(h):
    h.service.create("vm1", "half", {})
    h.set_status("half", CREATING)
    with pytest.raises(VolumeNotFound):
        h.service.get("vm1", "half")
    with pytest.raises(VolumeNotFound):
        h.service.attach("vm1", "half")


def test_a_removing_leftover_is_busy(h):
    h.service.create("vm1", "half", {})
    h.set_status("half", REMOVING)
    with pytest.raises(VolumeBusy, match="being removed"):
        h.service.get("vm1", "half")
    with pytest.raises(VolumeBusy):
        h.service.attach("vm1", "half")


@pytest.mark.parametrize("status", [CREATING, REMOVING])
def test_recover_cleans_transitional_leftovers(h, status):
    h.service.create("vm1", "keep", {})
    h.service.create("vm1", "half", {})
    h.set_status("half", status)
    report = h.service.recover()
    assert report["cleaned"] == 1
    assert h.backend.read_metadata(h.loc("half")) is None
    assert not h.disk_exists("half")
    assert h.service.get("vm1", "keep")["status"] == DETACHED


def test_metadata_without_a_disk_from_a_crash_is_cleaned_too(h):
    h.service.create("vm1", "half", {})
    h.backend.delete_disk(h.loc("half"))
    h.set_status("half", CREATING)
    assert h.service.recover()["cleaned"] == 1
    assert h.backend.read_metadata(h.loc("half")) is None


def test_create_over_a_creating_leftover_starts_afresh(h):
    old = h.service.create("vm1", "db", {})
    h.set_status("db", CREATING)
    new = h.service.create("vm1", "db", {"size": "300mb"})
    assert new["status"] == DETACHED and new["capacity_mb"] == 300
    assert new["disk_uuid"] != old["disk_uuid"]


def test_recover_drops_attachments_that_are_gone(h):
    h.service.create("vm1", "db", {})
    info = h.service.attach("vm1", "db")["attach"]
    h.backend.detach_disk(h.loc("db"), "vm1", info)  # e.g. the host rebooted
    assert h.service.recover()["detached"] == 1
    assert h.service.get("vm1", "db")["status"] == DETACHED


def test_recover_detaches_a_disk_attached_by_a_request_that_never_answered(h, monkeypatch):
    h.service.create("vm1", "db", {})
    h.fail_after("attach_disk", BackendError("reply lost"), monkeypatch)
    with pytest.raises(BackendError):
        h.service.attach("vm1", "db")
    monkeypatch.undo()
    assert h.service.get("vm1", "db")["status"] == DETACHED
    assert h.attached_devices("db") == 1  # attached, but nobody knows it
    assert h.service.recover()["detached"] == 1
    assert h.attached_devices("db") == 0
    assert h.service.attach("vm2", "db")["volume"]["attached_to"] == "vm2"


def _raise_backend_error(*_a, **_k):
    raise BackendError("metadata write failed")


def test_recover_leaves_healthy_volumes_alone(h):
    h.service.create("vm1", "a", {})
    h.service.create("vm1", "b", {})
    h.service.attach("vm1", "b")
    assert h.service.recover() == {"cleaned": 0, "detached": 0, "grown": 0, "skipped": 0,
                                   "temp_files": 0, "orphans": 0, "unsettled": []}
    assert h.service.get("vm1", "b")["attached_to"] == "vm1"


def test_recover_skips_and_reports_a_volume_the_kernel_will_not_settle(h, monkeypatch):
    h.service.create("vm1", "a", {})
    h.service.create("vm1", "b", {})
    h.service.attach("vm1", "b")
    real = h.backend.is_attached

    def enodev(loc, vm, info):
        if loc.name == "b":  # its loop device's sysfs entry answers ENODEV mid-teardown
            raise OSError(errno.ENODEV, "No such device")
        return real(loc, vm, info)

    monkeypatch.setattr(h.backend, "is_attached", enodev)
    report = h.service.recover()
    assert report["unsettled"] == ["b@ds1"]
    assert h.service.get("vm1", "a")["status"] == DETACHED


# -- remove ---------------------------------------------------------------------------
def test_remove_deletes_disk_and_metadata(h):
    h.service.create("vm1", "db", {})
    h.service.remove("vm1", "db")
    assert not h.disk_exists("db")
    assert h.backend.read_metadata(h.loc("db")) is None
    with pytest.raises(VolumeNotFound):
        h.service.get("vm1", "db")


def test_remove_of_a_missing_volume_is_not_found(h):
    with pytest.raises(VolumeNotFound, match="db@ds1"):
        h.service.remove("vm1", "db")


def test_remove_of_an_attached_volume_names_the_vm(h):
    h.service.create("vm1", "db", {})
    h.service.attach("vm-web-2", "db")
    with pytest.raises(VolumeInUse) as err:
        h.service.remove("vm1", "db")
    assert "vm-web-2" in err.value.message and "db@ds1" in err.value.message
    assert h.disk_exists("db")
    assert h.service.get("vm1", "db")["status"] == ATTACHED


def test_a_remove_interrupted_after_marking_is_finished_by_recover(h, monkeypatch):
    h.service.create("vm1", "db", {})
    monkeypatch.setattr(h.backend, "delete_disk", _raise_backend_error)
    with pytest.raises(BackendError):
        h.service.remove("vm1", "db")
    monkeypatch.undo()
    assert h.service.list("vm1") == []
    assert h.service.recover()["cleaned"] == 1
    assert not h.disk_exists("db")


# -- attach / detach ------------------------------------------------------------------
def test_attach_answers_what_the_guest_needs_and_records_the_vm(h):
    h.service.create("vm1", "db", {})
    answer = h.service.attach("vm1", "db")
    assert answer["attach"]["kind"] == "loop"
    assert answer["attach"]["device"].startswith("/dev/loop")
    assert answer["volume"]["attached_to"] == "vm1"
    assert answer["volume"]["status"] == ATTACHED
    assert h.service.get("vm1", "db")["attach_info"] == answer["attach"]
    assert h.attached_devices("db") == 1


def test_attach_to_the_same_vm_is_idempotent(h):
    h.service.create("vm1", "db", {})
    first = h.service.attach("vm1", "db")
    second = h.service.attach("vm1", "db")
    assert second["attach"] == first["attach"]
    assert h.attached_devices("db") == 1


def test_attach_to_the_same_vm_reattaches_when_the_disk_went_away(h):
    h.service.create("vm1", "db", {})
    first = h.service.attach("vm1", "db")
    h.backend.detach_disk(h.loc("db"), "vm1", first["attach"])
    again = h.service.attach("vm1", "db")
    assert again["volume"]["status"] == ATTACHED
    assert h.attached_devices("db") == 1


def test_attach_by_another_vm_names_the_holder(h):
    h.service.create("vm1", "db", {})
    h.service.attach("vm1", "db")
    with pytest.raises(VolumeInUse) as err:
        h.service.attach("vm2", "db")
    assert "attached to VM vm1" in err.value.message
    assert h.service.get("vm2", "db")["attached_to"] == "vm1"


def test_a_disk_left_on_a_powered_off_vm_may_be_taken():
    backend = FakeBackend()  # local "VMs" are always powered on
    service = VolumeService(backend)
    service.create("vm1", "db", {})
    service.attach("vm1", "db")
    backend.powered_off.add("vm1")
    assert service.attach("vm2", "db")["volume"]["attached_to"] == "vm2"
    assert backend.holder_of("db") == "vm2"


def test_a_record_saying_attached_to_a_vm_that_lacks_the_disk_does_not_block_others(h):
    # what an attach whose record went out beside its reconfigure leaves when the
    # reconfigure failed and the service died before writing the record back
    h.service.create("vm1", "db", {})
    info = h.service.attach("vm1", "db")["attach"]
    h.backend.detach_disk(h.loc("db"), "vm1", info)  # the disk is not there after all
    assert h.service.attach("vm2", "db")["volume"]["attached_to"] == "vm2"
    assert h.attached_devices("db") == 1


def test_a_read_only_volume_is_attached_read_only_once_formatted(h):
    h.service.create("vm1", "ro", {"access": "read-only"})
    h.service.attach("vm1", "ro")  # fresh: writable, so the guest can make the filesystem
    if h.kind == "fake":
        assert h.backend.attached[("ds1", "_DEFAULT", "ro")][1]["read_only"] is False
    else:
        assert "--read-only" not in h.losetup.argvs[-1]
    h.service.detach("vm1", "ro", formatted=True)
    h.service.attach("vm1", "ro")
    if h.kind == "fake":
        assert h.backend.attached[("ds1", "_DEFAULT", "ro")][1]["read_only"] is True
    else:
        assert "--read-only" in h.losetup.argvs[-1]


def test_a_failed_attach_leaves_the_volume_detached(h, monkeypatch):
    h.service.create("vm1", "db", {})
    monkeypatch.setattr(h.backend, "attach_disk", _raise_backend_error)
    with pytest.raises(BackendError):
        h.service.attach("vm1", "db")
    assert h.service.get("vm1", "db")["status"] == DETACHED


def test_attach_whose_metadata_write_fails_detaches_the_disk_again(h, monkeypatch):
    h.service.create("vm1", "db", {})
    monkeypatch.setattr(h.backend, "write_metadata", _raise_backend_error)
    with pytest.raises(BackendError):
        h.service.attach("vm1", "db")
    monkeypatch.undo()
    assert h.attached_devices("db") == 0


def test_detach_detaches_and_is_idempotent(h):
    h.service.create("vm1", "db", {})
    h.service.attach("vm1", "db")
    assert h.service.detach("vm1", "db")["status"] == DETACHED
    assert h.attached_devices("db") == 0
    assert h.service.detach("vm1", "db")["status"] == DETACHED
    assert h.service.attach("vm2", "db")["volume"]["attached_to"] == "vm2"


def test_detach_of_a_never_attached_volume_succeeds(h):
    h.service.create("vm1", "db", {})
    assert h.service.detach("vm1", "db")["status"] == DETACHED


def test_detach_by_another_vm_leaves_the_holder_attached(h):
    h.service.create("vm1", "db", {})
    h.service.attach("vm1", "db")
    h.service.detach("vm2", "db")
    assert h.service.get("vm1", "db")["attached_to"] == "vm1"
    assert h.attached_devices("db") == 1


def test_detach_of_a_missing_volume_is_not_found(h):
    with pytest.raises(VolumeNotFound):
        h.service.detach("vm1", "ghost")


# -- clone ----------------------------------------------------------------------------
def test_clone_from_a_detached_volume_makes_a_new_disk(h):
    src = h.service.create("vm1", "src", {})
    clone = h.service.create("vm1", "copy", {"clone-from": "src"})
    assert clone["clone_from"] == "src"
    assert clone["disk_uuid"] != src["disk_uuid"]
    assert h.disk_exists("copy") and h.disk_exists("src")


def test_clone_from_an_attached_volume_is_refused_naming_the_vm(h):
    h.service.create("vm1", "src", {})
    h.service.attach("vm-db", "src")
    with pytest.raises(VolumeInUse, match="attached to VM vm-db"):
        h.service.create("vm1", "copy", {"clone-from": "src"})
    assert h.backend.read_metadata(h.loc("copy")) is None
    assert not h.disk_exists("copy")


def test_clone_from_a_missing_volume_is_not_found_naming_the_option(h):
    with pytest.raises(VolumeNotFound) as caught:
        h.service.create("vm1", "copy", {"clone-from": "ghost"})
    assert caught.value.message.startswith("cannot clone from 'ghost': ")
    assert "vmgroup _DEFAULT" in caught.value.message
    assert h.backend.read_metadata(h.loc("copy")) is None
    assert not h.disk_exists("copy")


def test_clone_across_datastores(h):
    h.service.create("vm1", "src@ds2", {})
    assert h.service.create("vm1", "copy@ds1", {"clone-from": "src@ds2"})["name"] == "copy@ds1"
    assert h.disk_exists("copy", "ds1")


def test_a_clone_takes_the_size_and_filesystem_of_its_source(h):
    h.service.create("vm1", "src", {"size": "1gb", "fstype": "xfs"})
    clone = h.service.create("vm1", "copy", {"clone-from": "src", "size": "8mb"})
    assert (clone["capacity_mb"], clone["fstype"]) == (1024, "xfs")


def test_the_space_check_of_a_clone_counts_the_source_size():
    backend = FakeBackend({"ds1": 2048 * MB})
    service = VolumeService(backend)
    service.create("vm1", "src", {"size": "1gb"})
    backend.free["ds1"] = 500 * MB
    with pytest.raises(InsufficientSpace):
        service.create("vm1", "copy", {"clone-from": "src", "size": "8mb"})


# -- get / list / access ---------------------------------------------------------------
def test_get_of_a_missing_volume_is_not_found_naming_it(h):
    with pytest.raises(VolumeNotFound, match="ghost@ds1"):
        h.service.get("vm1", "ghost")


def test_get_reports_the_real_allocation(h):
    h.service.create("vm1", "db", {"size": "64mb"})
    view = h.service.get("vm1", "db")
    assert view["capacity_mb"] == 64
    assert 0 <= view["allocated_mb"] < 64  # thin: nothing written yet


def test_list_covers_every_datastore(h):
    h.service.create("vm1", "a@ds1", {})
    h.service.create("vm1", "b@ds2", {})
    assert sorted(v["name"] for v in h.service.list("vm1")) == ["a@ds1", "b@ds2"]


class _Tenants(OpenAccess):
    """vm-a* in vmgroup A, everything else in B; B may not create on ds2."""

    def vmgroup_of(self, vm: str) -> str:
        return "A" if vm.startswith("vm-a") else "B"

    def default_datastore(self, vmgroup: str) -> str | None:
        return "ds2" if vmgroup == "A" else None

    def check_create(self, vmgroup, datastore, size_mb, used_mb):
        if vmgroup == "B" and datastore == "ds2":
            raise AccessDenied(f"vmgroup {vmgroup} may not create on {datastore}")


def test_a_vm_sees_only_its_vmgroups_volumes(h):
    service = VolumeService(h.backend, access=_Tenants())
    service.create("vm-a1", "shared-name@ds1", {})
    service.create("vm-b1", "shared-name@ds1", {"size": "200mb"})
    assert [v["vmgroup"] for v in service.list("vm-a2")] == ["A"]
    assert service.get("vm-b2", "shared-name@ds1")["capacity_mb"] == 200
    assert service.get("vm-a2", "shared-name@ds1")["capacity_mb"] == 100


def test_the_vmgroup_default_datastore_and_policy_apply(h):
    service = VolumeService(h.backend, access=_Tenants())
    assert service.create("vm-a1", "db", {})["name"] == "db@ds2"
    with pytest.raises(AccessDenied):
        service.create("vm-b1", "db@ds2", {})
    assert h.backend.read_metadata(DiskLocation("ds2", "B", "db")) is None


def test_corrupt_metadata_is_a_backend_error_on_get(h):
    h.service.create("vm1", "db", {})
    h.backend.write_metadata(h.loc("db"), {"name": "db", "status": "weird"})
    with pytest.raises(BackendError, match="corrupt metadata"):
        h.service.get("vm1", "db")


def test_a_stopping_service_declines_operations(h):
    h.service.create("vm1", "db", {})
    assert h.service.gate.drain(timeout=1.0)
    for call in (lambda: h.service.create("vm1", "x", {}), lambda: h.service.list("vm1"),
                 lambda: h.service.attach("vm1", "db"), lambda: h.service.remove("vm1", "db")):
        with pytest.raises(ServiceStopping):
            call()
    assert h.disk_exists("db")


@pytest.mark.parametrize("name", ["my vol", "données#1", "卷", "a@b", "-x*"])
def test_vdvs_style_names_keep_their_spelling_and_get_file_safe_files(h, name):
    created = h.service.create("vm1", f"{name}@ds1", {})
    assert created["volume"] == name and created["name"] == f"{name}@ds1"
    assert [v["volume"] for v in h.service.list("vm1")] == [name]
    assert h.service.get("vm1", f"{name}@DS1")["volume"] == name
    if h.kind == "local":
        folder = os.path.join(h.backend._paths["ds1"], "dockvols", "_DEFAULT")
        stem = file_stem(name)
        assert sorted(os.listdir(folder)) == [f"{stem}-flat.vmdk", f"{stem}.json",
                                              f"{stem}.vmdk"]
        assert all(SAFE_STEM.fullmatch(f.rsplit(".", 1)[0]) for f in os.listdir(folder))
    h.service.remove("vm1", f"{name}@ds1")
    assert h.service.list("vm1") == []


def test_a_name_differing_only_in_case_on_a_case_blind_datastore_is_refused(h, monkeypatch):
    h.service.create("vm1", "Db", {})
    real = h.backend.read_metadata

    def case_blind(loc):  # what a file system that ignores case answers for db.json
        return real(DiskLocation(loc.datastore, loc.vmgroup, "Db")) if loc.name == "db" \
            else real(loc)
    monkeypatch.setattr(h.backend, "read_metadata", case_blind)
    with pytest.raises(InvalidName, match="differs only in case from existing volume 'Db'"):
        h.service.create("vm1", "db", {})
    assert [v["volume"] for v in h.service.list("vm1")] == ["Db"]


def test_a_name_too_long_for_the_guests_mount_point_is_refused_naming_the_limit(h):
    with pytest.raises(InvalidName, match="255 bytes"):
        h.service.create("vm1", "卷" * 90 + "@ds1", {})  # 270 bytes in UTF-8
    assert h.service.create("vm1", "卷" * 80 + "@ds1", {})["volume"] == "卷" * 80
    assert h.service.list("vm1")[0]["volume"] == "卷" * 80


# -- blank disks --------------------------------------------------------------------------
def test_only_the_first_attach_of_a_created_disk_says_it_is_blank(h):
    assert h.service.create("vm1", "db", {})["blank"] is True
    first = h.service.attach("vm1", "db")
    assert first["blank"] is True and first["volume"]["blank"] is False
    h.guest_writes("db")
    assert "blank" not in h.service.attach("vm1", "db")  # the same attach, asked again
    h.service.detach("vm1", "db")
    assert "blank" not in h.service.attach("vm1", "db")


def test_a_thin_local_disk_with_data_is_never_blank_whatever_its_record_says(tmp_path):
    losetup = FakeLosetup()
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup)
    h = Harness("local", backend, losetup)
    h.service.create("vm1", "db", {})
    loc = h.loc("db")
    blank_record = backend.read_metadata(loc)
    assert h.service.attach("vm1", "db")["blank"] is True
    h.guest_writes("db")  # the guest's mkfs, made durable
    # a host crash took back the attach's record (an attachment record: its folder is
    # not fsynced) and the loop device with it; what the guest made durable is there
    backend.write_metadata(loc, blank_record)
    losetup.devices.clear()
    h.service.recover()
    assert "blank" not in h.service.attach("vm1", "db")  # the disk shows its blocks
    h.service.detach("vm1", "db")
    # a thick disk's blocks are there from the start: its record alone can say
    h.service.create("vm1", "thick", {"diskformat": "zeroedthick", "size": "8mb"})
    assert h.service.attach("vm1", "thick")["blank"] is True
    h.service.detach("vm1", "thick")
    assert "blank" not in h.service.attach("vm1", "thick")


def test_a_disk_whose_blocks_show_late_is_blank_only_by_its_record(h, monkeypatch):
    """As on ZFS, which may show no block of a just-written file until its transaction
    group syncs: the record that the disk was attached before keeps the probe."""
    h.service.create("vm1", "db", {})
    assert h.service.attach("vm1", "db")["blank"] is True
    h.service.detach("vm1", "db")
    monkeypatch.setattr(h.backend, "disk_blank", lambda loc: True)
    assert "blank" not in h.service.attach("vm1", "db")


def test_a_clone_is_never_blank_by_its_record(h):
    h.service.create("vm1", "src", {})
    h.guest_writes("src")
    assert h.service.create("vm1", "copy", {"clone-from": "src"})["blank"] is False
    assert "blank" not in h.service.attach("vm1", "copy")


def test_an_attach_undone_by_a_failed_record_leaves_the_disk_blank(h, monkeypatch):
    h.service.create("vm1", "db", {})
    real = h.backend.write_metadata

    def fails(loc, data, fence=None, attachment=False, before_disk=False):
        raise BackendError("datastore went read-only")
    monkeypatch.setattr(h.backend, "write_metadata", fails)
    with pytest.raises(BackendError):
        h.service.attach("vm1", "db")
    monkeypatch.setattr(h.backend, "write_metadata", real)
    assert h.service.attach("vm1", "db")["blank"] is True  # nothing saw the disk meanwhile


def test_recovery_of_a_creating_record_keeps_a_disk_older_than_the_record(h):
    # a create (with a total quota, or without leases: its `creating` record) met a disk
    # that was there before it (DiskExists) and died before deleting its record: recovery
    # deletes the record only
    h.service.create("vm1", "db", {})
    h.set_status("db", CREATING)
    h.date_record("db", +5.0)
    assert h.service.recover()["cleaned"] == 1
    assert h.backend.read_metadata(h.loc("db")) is None
    assert h.disk_exists("db")


def test_a_create_meeting_a_disk_no_volume_records_says_how_to_adopt_it_and_leaves_it(h):
    # a vDVS disk not yet imported sits where the volume's disk would go
    h.backend.create_disk(h.loc("db"), 8, "thin", None)
    with pytest.raises(DiskExists) as caught:
        h.service.create("vm1", "db", {"size": "8mb"})
    message = caught.value.message
    assert message.startswith("cannot create volume db: ")
    assert "db.vmdk" in message or "db-flat.vmdk" in message  # which disk
    # what to do: the import that adopts it where it is (any vmgroup; --from-vdvs skips a
    # vmgroup folder vDVS did not know)
    assert ("dockvols-admin volume import --path '[ds1] dockvols/_DEFAULT/db.vmdk' "
            "--name db` adopts it") in message
    assert h.disk_exists("db")  # left as it was, and no record made for it
    assert h.backend.read_metadata(h.loc("db")) is None
    assert h.service.list("vm1") == []


def test_the_import_a_refused_create_names_quotes_its_path_name_and_vmgroup():
    from esx_service.volumes import _import_in_place

    assert _import_in_place(DiskLocation("ds 1", "team-a", "my db")) == (
        "dockvols-admin volume import --path '[ds 1] dockvols/team-a/my~20db.vmdk' "
        "--name 'my db' --vmgroup team-a")
