"""VolumeService.resize (grow only) against the in-memory FakeBackend and the real
LocalBackend (files in tmp_path, losetup played by FakeLosetup): the checks, the crash
ordering (a recorded target that recovery, attach or the next resize finishes) and that
nothing ever shrinks."""

from __future__ import annotations

import os

import pytest

from esx_service.access import OpenAccess
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import (
    AccessDenied,
    InsufficientSpace,
    InvalidOption,
    QuotaExceeded,
    VolumeNotFound,
)
from esx_service.metadata import ATTACHED, VolumeMeta
from esx_service.options import MB
from esx_service.vmdk import parse_descriptor
from esx_service.volumes import VolumeService
from tests.fakes import GB, FakeBackend, FakeLosetup


class Disks:
    """The backend plus how big its disk for a volume really is."""

    def __init__(self, kind: str, backend, losetup: FakeLosetup | None = None) -> None:
        self.kind = kind
        self.backend = backend
        self.losetup = losetup
        self.service = VolumeService(backend)

    def loc(self, name: str) -> DiskLocation:
        return DiskLocation("ds1", "_DEFAULT", name)

    def disk_mb(self, name: str) -> int:
        if self.kind == "fake":
            return self.backend.disks[("ds1", "_DEFAULT", name)]["size_bytes"] // MB
        folder = os.path.join(self.backend._paths["ds1"], "dockvols", "_DEFAULT")
        with open(os.path.join(folder, f"{name}.vmdk"), encoding="utf-8") as f:
            described = parse_descriptor(f.read()).size_bytes
        extent = os.path.getsize(os.path.join(folder, f"{name}-flat.vmdk"))
        assert extent == described, "the descriptor and the extent disagree"
        return described // MB

    def meta(self, name: str) -> VolumeMeta:
        return VolumeMeta.from_dict(self.backend.read_metadata(self.loc(name)))

    def record_target(self, name: str, size_mb: int) -> None:
        """What a kill -9 right after ``resize.recorded`` leaves behind."""
        data = self.backend.read_metadata(self.loc(name))
        data["resize_to"] = size_mb
        self.backend.write_metadata(self.loc(name), data)


@pytest.fixture(params=["fake", "local"])
def d(request, tmp_path) -> Disks:
    if request.param == "fake":
        return Disks("fake", FakeBackend())
    losetup = FakeLosetup()
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup)
    return Disks("local", backend, losetup)


def test_a_detached_volume_grows_now_and_says_its_filesystem_grows_at_next_mount(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    reply = d.service.resize("vm1", "db", "300mb")
    assert reply["previous_capacity_mb"] == 100
    assert reply["volume"]["capacity_mb"] == 300
    assert reply["filesystem"] == "the filesystem grows at the next mount"
    assert d.disk_mb("db") == 300
    assert d.service.get("vm1", "db")["capacity_mb"] == 300
    assert d.meta("db").resize_to is None


def test_the_same_size_is_a_success_that_changes_nothing(d):
    d.service.create("vm1", "db", {"size": "1gb"})
    generation = d.meta("db").generation
    reply = d.service.resize("vm1", "db", "1024mb")
    assert reply["volume"]["capacity_mb"] == 1024
    assert reply["filesystem"].startswith("already 1gb")
    assert d.meta("db").generation == generation
    assert d.disk_mb("db") == 1024


def test_a_smaller_size_is_refused_naming_the_current_size(d):
    d.service.create("vm1", "db", {"size": "1gb"})
    with pytest.raises(InvalidOption, match=r"cannot shrink volume db@ds1 to 500mb: its size "
                                            r"is 1gb"):
        d.service.resize("vm1", "db", "500mb")
    assert d.disk_mb("db") == 1024 and d.meta("db").options.size_mb == 1024


@pytest.mark.parametrize("size", ["20xb", "0gb", "-5mb", "", "63tb", 20, None])
def test_a_bad_size_is_refused_naming_it(d, size):
    d.service.create("vm1", "db", {"size": "100mb"})
    with pytest.raises(InvalidOption, match=f"invalid size {size!r}"):
        d.service.resize("vm1", "db", size)
    assert d.disk_mb("db") == 100


def test_an_unknown_volume_is_not_found_naming_it(d):
    with pytest.raises(VolumeNotFound, match="ghost@ds1"):
        d.service.resize("vm1", "ghost", "1gb")


def test_over_the_datastore_free_space_is_refused_naming_it():
    backend = FakeBackend({"ds1": 1 * GB})
    service = VolumeService(backend)
    service.create("vm1", "db", {"size": "500mb"})
    with pytest.raises(InsufficientSpace, match=r"needs 1548mb more and datastore ds1 has "
                                                r"1gb free"):
        service.resize("vm1", "db", "2gb")
    meta = VolumeMeta.from_dict(backend.read_metadata(DiskLocation("ds1", "_DEFAULT", "db")))
    assert (meta.options.size_mb, meta.resize_to) == (500, None)
    service.resize("vm1", "db", "1gb")  # the growth, not the new size, must fit


class _Quota(OpenAccess):
    """volume-maxsize 2gb and volume-totalsize 3gb, as DbAccess would check them."""

    def __init__(self) -> None:
        self.used_seen: list[int] = []

    def counts_use(self, vmgroup, datastore):
        return True

    def check_create(self, vmgroup, datastore, size_mb, used_mb):
        if size_mb > 2048:
            raise QuotaExceeded(f"volume-maxsize of vmgroup {vmgroup} on {datastore} is 2gb; "
                                f"{size_mb}mb was asked")
        used = used_mb()
        self.used_seen.append(used)
        if used + size_mb > 3072:
            raise QuotaExceeded(f"volume-totalsize of vmgroup {vmgroup} on {datastore} is 3gb; "
                                f"{used}mb is used and {size_mb}mb was asked")


def test_quotas_apply_counting_the_other_volumes_and_not_the_old_size(d):
    policy = _Quota()
    service = VolumeService(d.backend, access=policy)
    service.create("vm1", "db", {"size": "1gb"})
    service.create("vm1", "logs", {"size": "1gb"})
    service.resize("vm1", "db", "2gb")  # 1gb other + 2gb = the total exactly
    assert policy.used_seen[-1] == 1024
    with pytest.raises(QuotaExceeded, match=r"cannot grow volume logs@ds1 from 1gb to 2gb: "
                                            r"volume-totalsize .* 2048mb is used"):
        service.resize("vm1", "logs", "2gb")
    with pytest.raises(QuotaExceeded, match="volume-maxsize .* 3072mb was asked"):
        service.resize("vm1", "db", "3gb")
    assert d.meta("logs").options.size_mb == 1024 and d.meta("logs").resize_to is None


def test_a_recorded_grow_counts_against_the_quota_before_the_disk_grows(d):
    policy = _Quota()
    service = VolumeService(d.backend, access=policy)
    service.create("vm1", "db", {"size": "1gb"})
    service.create("vm1", "logs", {"size": "100mb"})
    d.record_target("db", 2048)  # a grow recorded, not finished
    with pytest.raises(QuotaExceeded):
        service.create("vm1", "more", {"size": "1gb"})  # 2048 + 100 + 1024 > 3072


def test_access_rules_apply_as_for_create(d):
    class NoCreate(OpenAccess):
        def check_create(self, vmgroup, datastore, size_mb, used_mb):
            raise AccessDenied(f"vmgroup {vmgroup} may not create volumes on {datastore}")

    d.service.create("vm1", "db", {"size": "100mb"})
    service = VolumeService(d.backend, access=NoCreate())
    with pytest.raises(AccessDenied, match="cannot grow volume db@ds1 from 100mb to 200mb: "
                                           "vmgroup _DEFAULT may not create"):
        service.resize("vm1", "db", "200mb")


def test_an_attached_volume_grows_online_and_its_attachment_sees_it(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    attach = d.service.attach("vm1", "db")["attach"]
    reply = d.service.resize("vm1", "db", "200mb")
    assert reply["volume"]["status"] == ATTACHED
    assert "plugin of VM vm1 grows the mounted filesystem online" in reply["filesystem"]
    assert d.disk_mb("db") == 200
    if d.kind == "fake":
        assert d.backend.grown == [("db", 200, attach)]
    else:
        assert d.losetup.capacity_refreshed == [attach["device"]]


def test_recovery_finishes_a_grow_recorded_before_a_crash(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    d.record_target("db", 400)
    assert d.service.get("vm1", "db")["capacity_mb"] == 100  # not grown yet: not claimed
    assert d.service.recover()["grown"] == 1
    assert d.disk_mb("db") == 400
    assert (d.meta("db").options.size_mb, d.meta("db").resize_to) == (400, None)


def test_recovery_finishes_a_grow_whose_disk_grew_before_the_crash(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    d.record_target("db", 400)
    d.backend.grow_disk(d.loc("db"), 400, None)  # killed after resize.disk_grown
    d.service.recover()
    assert d.disk_mb("db") == 400 and d.meta("db").options.size_mb == 400


def test_an_attach_finishes_a_recorded_grow_first(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    d.record_target("db", 300)
    assert d.service.attach("vm1", "db")["volume"]["capacity_mb"] == 300
    assert d.disk_mb("db") == 300


def test_a_new_resize_finishes_a_recorded_grow_then_applies_its_own_rules(d):
    d.service.create("vm1", "db", {"size": "100mb"})
    d.record_target("db", 300)
    with pytest.raises(InvalidOption, match="its size is 300mb"):
        d.service.resize("vm1", "db", "200mb")
    assert d.disk_mb("db") == 300


def test_a_stale_target_below_the_size_is_dropped_and_nothing_shrinks(d):
    d.service.create("vm1", "db", {"size": "300mb"})
    d.record_target("db", 200)
    d.service.recover()
    assert d.disk_mb("db") == 300
    assert (d.meta("db").options.size_mb, d.meta("db").resize_to) == (300, None)


def test_a_failed_grow_keeps_the_size_and_forgets_the_target(d, monkeypatch):
    d.service.create("vm1", "db", {"size": "100mb"})

    def full(loc, size_mb, attach_info):
        raise InsufficientSpace("datastore ds1 ran out of space growing db to 900mb")
    monkeypatch.setattr(d.backend, "grow_disk", full)
    with pytest.raises(InsufficientSpace):
        d.service.resize("vm1", "db", "900mb")
    assert (d.meta("db").options.size_mb, d.meta("db").resize_to) == (100, None)
    assert d.disk_mb("db") == 100


def test_a_thick_disk_owns_its_grown_space(tmp_path):
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=FakeLosetup())
    service = VolumeService(backend)
    service.create("vm1", "thick", {"size": "8mb", "diskformat": "zeroedthick"})
    service.resize("vm1", "thick", "16mb")
    extent = tmp_path / "ds1" / "dockvols" / "_DEFAULT" / "thick-flat.vmdk"
    assert os.stat(extent).st_blocks * 512 >= 16 * MB
    thin = service.create("vm1", "thin", {"size": "8mb"})
    service.resize("vm1", "thin", "16mb")
    assert service.get("vm1", "thin")["allocated_mb"] < 1
    assert service.get("vm1", "thin")["disk_uuid"] == thin["disk_uuid"]
