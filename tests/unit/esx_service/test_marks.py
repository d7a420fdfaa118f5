"""A create marks itself in its lease's staging folder and a remove moves the volume's
record there before the disk goes (issue 15: 12 and 4 round trips through the vSphere API
with a kept lease, not 15 and 7). What a holder that died leaves there, the lease's next
holder finishes under the lease before its own operation, and recovery's sweep for this
host's own dead entries; a visible record means there is nothing to finish.

A holder's death is played as a crash leaves it: the operation stops at the point (no
clean-up runs), and its lease entry is renamed to the tag of a process of this host that
is gone, which the next holder takes over at once (the real kill -9 is in
tests/integration/test_multi_host.py and the chaos soak)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dockvols_common.instance import Instance, Tag
from esx_service import volumes
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.cluster_locks import MARK, ClusterLocks
from esx_service.errors import BackendError, DiskExists, VolumeNotFound
from esx_service.lease_store import LocalLeaseStore
from esx_service.leases import LeaseManager
from esx_service.volumes import VolumeService
from tests.fakes import FakeLosetup

LOC = DiskLocation("ds1", "_DEFAULT", "db")
LEASE = "dockvols/_DEFAULT/.lease-db"


class Crash(BaseException):
    """The process dies here: nothing after it runs, no clean-up either."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ds1" / "dockvols").mkdir(parents=True)
    return tmp_path / "ds1"


def _service(root: Path, keep: float = 60.0) -> VolumeService:
    manager = LeaseManager(LocalLeaseStore(lambda ds: str(root)), Instance("h1"),
                           lease_seconds=2.0, wait_seconds=0.5)
    return VolumeService(LocalBackend({"ds1": str(root)}, run=FakeLosetup()), "ds1",
                         locks=ClusterLocks(manager, keep_seconds=keep))


def _dead_tag() -> str:
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = Instance("h1")
    return str(Tag(me.host, me.locality, gone.pid, "1", "abc"))


def _die(service: VolumeService, root: Path) -> None:
    """The service is killed: its kept lease stays as it was, under a tag whose process is
    provably gone (same host)."""
    locks = service._locks
    assert isinstance(locks, ClusterLocks)
    locks.leases.stop()
    [(lease, _)] = locks._kept.values()
    os.rename(root / lease.staging, root / LEASE / _dead_tag())


def _files(root: Path) -> list[str]:
    folder = root / "dockvols" / "_DEFAULT"
    return sorted(e for e in os.listdir(folder) if not e.startswith("."))


def _lease_entries(root: Path) -> list[str]:
    return sorted(os.listdir(root / LEASE)) if (root / LEASE).exists() else []


def _crash_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def fault(name: str) -> None:
        if name == point:
            raise Crash(point)
    monkeypatch.setattr(volumes, "fault_point", fault)


def _cut_remove(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume whose remove died once its record was moved aside, the disk still there."""
    dying = _service(root)
    dying.create("vm1", "db", {"size": "8mb"})
    _crash_at(monkeypatch, "remove.marked")
    with pytest.raises(Crash):
        dying.remove("vm1", "db")
    _die(dying, root)
    monkeypatch.undo()


def test_a_create_marks_itself_instead_of_writing_a_creating_record(root, monkeypatch):
    service = _service(root)
    _crash_at(monkeypatch, "create.metadata_written")
    with pytest.raises(Crash):
        service.create("vm1", "db", {"size": "8mb"})
    assert _files(root) == []  # no `creating` record, no disk yet
    [staging] = [e for e in _lease_entries(root) if not e.startswith(".")]
    assert [e for e in os.listdir(root / LEASE / staging)] == [f"{MARK}create-1"]


def test_a_disk_whose_create_died_before_its_record_is_deleted_by_the_next_holder(
        root, monkeypatch):
    dying = _service(root)
    real_write = LocalBackend.write_metadata

    def die_at_the_record(self, loc, data, **kw):
        if data.get("status") == "detached":
            raise Crash("before the record")
        return real_write(self, loc, data, **kw)
    monkeypatch.setattr(LocalBackend, "write_metadata", die_at_the_record)
    monkeypatch.setattr(VolumeService, "_undo_create", lambda *a, **k: None)  # no clean-up
    with pytest.raises(Crash):
        dying.create("vm1", "db", {"size": "8mb"})
    assert _files(root) == ["db-flat.vmdk", "db.vmdk"]  # the disk, and no record
    _die(dying, root)
    monkeypatch.undo()
    other = _service(root)
    with pytest.raises(VolumeNotFound):
        other.get("vm1", "db")  # a read takes no lease: nothing is finished by it
    assert other.create("vm1", "db", {"size": "8mb"})["status"] == "detached"
    # the dead create's disk went first (the new one would have met DiskExists)
    assert _files(root) == ["db-flat.vmdk", "db.json", "db.vmdk"]
    assert not any(e.startswith(".dead-") for e in _lease_entries(root))


def test_recovery_finishes_this_hosts_dead_create_without_being_asked_for_the_volume(
        root, monkeypatch):
    dying = _service(root)
    monkeypatch.setattr(LocalBackend, "write_metadata", _crash_on_detached(
        LocalBackend.write_metadata))
    monkeypatch.setattr(VolumeService, "_undo_create", lambda *a, **k: None)
    with pytest.raises(Crash):
        dying.create("vm1", "db", {"size": "8mb"})
    _die(dying, root)
    monkeypatch.undo()
    report = _service(root).recover()
    assert _files(root) == [] and report["temp_files"] >= 1
    assert not any(e.startswith(".dead-") for e in _lease_entries(root))


def _crash_on_detached(real):
    def write(self, loc, data, **kw):
        if data.get("status") == "detached":
            raise Crash("before the record")
        return real(self, loc, data, **kw)
    return write


def test_a_mark_beside_a_visible_record_leaves_the_volume_whole(root, monkeypatch):
    # the create finished, then its service died while keeping the lease: the mark is
    # still in the staging folder, and means nothing any more
    dying = _service(root)
    dying.create("vm1", "db", {"size": "8mb"})
    _die(dying, root)
    _the_next_holder_finds_the_volume_whole(root)


def _the_next_holder_finds_the_volume_whole(root: Path) -> None:
    other = _service(root)
    other.attach("vm1", "db")  # takes the lease: the dead holder's grave is worked off
    assert not any(e.startswith(".dead-") for e in _lease_entries(root))
    assert other.detach("vm1", "db")["status"] == "detached"
    assert _files(root) == ["db-flat.vmdk", "db.json", "db.vmdk"]


def test_a_remove_moves_the_record_aside_before_the_disk_goes(root, monkeypatch):
    service = _service(root)
    service.create("vm1", "db", {"size": "8mb"})
    _crash_at(monkeypatch, "remove.marked")
    with pytest.raises(Crash):
        service.remove("vm1", "db")
    assert _files(root) == ["db-flat.vmdk", "db.vmdk"]  # out of sight, the disk still there
    with pytest.raises(VolumeNotFound):
        service.get("vm1", "db")


def test_a_remove_that_died_before_the_disk_went_is_finished_by_the_next_holder(
        root, monkeypatch):
    _cut_remove(root, monkeypatch)
    other = _service(root)
    assert other.list("vm1") == []
    assert other.create("vm1", "db", {"size": "8mb"})["status"] == "detached"
    assert _files(root) == ["db-flat.vmdk", "db.json", "db.vmdk"]  # the new volume only
    assert not any(e.startswith(".dead-") for e in _lease_entries(root))


def test_a_stale_remove_mark_never_touches_the_volume_made_again_after_it(root):
    service = _service(root)
    service.create("vm1", "db", {"size": "8mb"})
    service.remove("vm1", "db")
    service.create("vm1", "db", {"size": "8mb"})  # same kept lease: its marks stay in it
    _die(service, root)
    _the_next_holder_finds_the_volume_whole(root)


def test_a_remove_whose_disk_cannot_go_puts_the_record_back(root, monkeypatch):
    service = _service(root)
    service.create("vm1", "db", {"size": "8mb"})

    def refuse(self, loc):
        raise BackendError("the disk is busy")
    monkeypatch.setattr(LocalBackend, "delete_disk", refuse)
    with pytest.raises(BackendError, match="busy"):
        service.remove("vm1", "db")
    assert service.get("vm1", "db")["status"] == "detached"
    assert _files(root) == ["db-flat.vmdk", "db.json", "db.vmdk"]


def test_finishing_a_dead_holders_work_that_fails_keeps_its_grave_for_the_next(
        root, monkeypatch):
    _cut_remove(root, monkeypatch)

    def refuse(self, loc):
        raise BackendError("the disk is busy")
    monkeypatch.setattr(LocalBackend, "delete_disk", refuse)
    other = _service(root, keep=0)
    with pytest.raises(BackendError, match="busy"):
        other.create("vm1", "db", {"size": "8mb"})
    assert any(e.startswith(".dead-") for e in _lease_entries(root))
    assert _files(root) == ["db-flat.vmdk", "db.vmdk"]
    monkeypatch.undo()
    with pytest.raises(VolumeNotFound):
        other.remove("vm1", "db")  # the remove it finished first was the one asked for
    assert _files(root) == [] and not any(e.startswith(".dead-") for e in _lease_entries(root))


def test_a_create_that_found_someone_elses_disk_takes_its_mark_back(root, monkeypatch):
    service = _service(root)

    def exists(self, loc, size_mb, diskformat, policy):
        raise DiskExists("a disk is there already")
    monkeypatch.setattr(LocalBackend, "create_disk", exists)
    with pytest.raises(DiskExists):
        service.create("vm1", "db", {"size": "8mb"})
    [staging] = [e for e in _lease_entries(root) if not e.startswith(".")]
    assert os.listdir(root / LEASE / staging) == []  # nothing for a next holder to delete


def test_an_import_takes_a_fresh_lease_not_one_holding_a_create_mark(root):
    service = _service(root)
    service.create("vm1", "db", {"size": "8mb"})
    service.remove("vm1", "db")
    locks = service._locks
    assert isinstance(locks, ClusterLocks)
    [(kept, _)] = locks._kept.values()
    with locks.hold("ds1/_DEFAULT/db", fresh=True):
        assert locks.fence("ds1/_DEFAULT/db") is not kept
        assert os.listdir(root / locks.fence("ds1/_DEFAULT/db").staging) == []
    assert kept.lost  # let go, marks and all


def test_where_a_total_quota_counts_use_the_records_stay(root, monkeypatch):
    service = _service(root)
    monkeypatch.setattr(service.access, "counts_use", lambda vmgroup, ds: True)
    _crash_at(monkeypatch, "create.metadata_written")
    with pytest.raises(Crash):
        service.create("vm1", "db", {"size": "8mb"})
    assert _files(root) == ["db.json"]  # `creating`, which other hosts count


def test_a_remove_under_a_lease_makes_one_fsync_where_a_removing_record_took_two(
        root, monkeypatch):
    service = _service(root)
    service.create("vm1", "db", {"size": "8mb"})
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    service.remove("vm1", "db")
    # the staging folder, which the record was renamed into: durable before the disk goes
    assert len(synced) == 1 and synced[0].startswith("h1_")


def _disk_there_before(root: Path) -> None:
    """A disk at the volume's path and no record: a vDVS disk not yet imported, or an
    import cut short. Made a day ago."""
    folder = root / "dockvols" / "_DEFAULT"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db-flat.vmdk").write_bytes(b"user data")
    (folder / "db.vmdk").write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="vmfs"\nRW 16384 VMFS "db-flat.vmdk"\n')
    day_ago = os.stat(folder).st_mtime_ns - 86400 * 10**9
    for f in ("db-flat.vmdk", "db.vmdk"):
        os.utime(folder / f, ns=(day_ago, day_ago))


def test_a_create_that_met_a_disk_there_before_and_died_leaves_that_disk(
        root, monkeypatch):
    _disk_there_before(root)
    dying = _service(root)

    def die(self, key, mark):
        raise Crash("before the mark is taken back")
    monkeypatch.setattr(ClusterLocks, "unmark", die)
    with pytest.raises(Crash):
        dying.create("vm1", "db", {"size": "8mb"})
    _die(dying, root)
    monkeypatch.undo()
    other = _service(root)
    with pytest.raises(DiskExists):  # the grave worked off, the disk left: still there
        other.create("vm1", "db", {"size": "8mb"})
    assert (root / "dockvols" / "_DEFAULT" / "db-flat.vmdk").read_bytes() == b"user data"
    assert not any(e.startswith(".dead-") for e in _lease_entries(root))
    assert _service(root).recover()["cleaned"] == 0  # and recovery leaves it too
    assert _files(root) == ["db-flat.vmdk", "db.vmdk"]
