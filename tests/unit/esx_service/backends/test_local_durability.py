"""Which fsyncs the local backend's life cycle makes, and why the ones it leaves out lose
nothing: the records a host crash may lose (issue 15) are rebuilt by recovery from the
loop table, a create whose last folder fsync never happened is undone whole, and the two
files a create writes without any fsync (the `creating` record, the descriptor) hold
nothing that is not kept elsewhere too.

A lost rename is played by putting back the file as it was before the write: that is all a
host crash can leave of a write whose file was fsynced but whose folder was not. A lost
unsynced write is played by emptying the file: ext4 and XFS commit a new file's size only
with its data, so that and a missing name are all a crash can leave of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockvols_common import atomic
from esx_service import vmdk
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import BackendError, VolumeNotFound
from esx_service.volumes import VolumeService
from tests.fakes import FakeLosetup

LOC = DiskLocation("ds1", "_DEFAULT", "db")


@pytest.fixture
def service(local_backend: LocalBackend) -> VolumeService:
    return VolumeService(local_backend)


def _file(backend: LocalBackend, suffix: str) -> Path:
    return Path(backend._paths["ds1"]) / LOC.folder / f"db{suffix}"


class FsyncLog:
    """os.fsync as dockvols_common.atomic and the backend call it, recorded by what was
    synced: 'metadata', 'descriptor', 'extent' (a file, by its final or temp name) or
    'folder'."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                self.synced.append("folder")
            elif "-flat.vmdk" in name:
                self.synced.append("extent")
            elif ".vmdk" in name:
                self.synced.append("descriptor")
            else:
                self.synced.append("metadata")
            real(fd)

        monkeypatch.setattr(atomic.os, "fsync", fsync)  # os is one module: covers local.py

    def take(self) -> list[str]:
        out, self.synced = self.synced, []
        return out


def _extent_written(backend: LocalBackend) -> None:
    with open(_file(backend, "-flat.vmdk"), "r+b") as f:
        f.write(b"\x53\xef" * 512)


@pytest.mark.parametrize("diskformat", ["eagerzeroedthick", "zeroedthick"])
def test_a_thick_disk_is_blank_by_its_record_made_crash_safe_at_its_first_attach(
        service, monkeypatch, diskformat):
    log = FsyncLog(monkeypatch)
    service.create("vm1", "db", {"size": "8mb", "diskformat": diskformat})
    written = ["extent"] if diskformat == "eagerzeroedthick" else []  # zeros are data
    assert log.take() == [*written, "metadata", "folder"]
    assert service.attach("vm1", "db")["blank"] is True
    assert log.take() == ["metadata", "folder"]  # `blank` must never come back
    service.detach("vm1", "db", formatted=True)
    log.take()
    assert "blank" not in service.attach("vm1", "db")
    assert log.take() == ["metadata"]


def test_each_operation_makes_only_the_fsyncs_crash_safety_needs(service, local_backend,
                                                                 monkeypatch):
    log = FsyncLog(monkeypatch)
    service.create("vm1", "db", {"size": "8mb"})
    # `creating` before the disk exists, its name journaled before the extent's; the thin
    # extent has no data; all of them go with the `detached` record's fsyncs, the last step
    # before the create answers (a `creating` record or a descriptor whose content a crash
    # lost reads as what it was: tests below)
    assert log.take() == ["metadata", "folder"]
    assert service.attach("vm1", "db")["blank"] is True
    # blank because the thin extent has no block: an attachment record like any other
    assert log.take() == ["metadata"]
    _extent_written(local_backend)  # the guest's mkfs
    service.detach("vm1", "db", formatted=True)
    assert log.take() == ["metadata"]  # the attachment record: whole, rename not synced
    assert "blank" not in service.attach("vm1", "db")
    assert log.take() == ["metadata"]
    service.detach("vm1", "db", formatted=True)
    assert log.take() == ["metadata"]
    service.remove("vm1", "db")
    assert log.take() == ["metadata", "folder"]  # `removing` durable before the disk goes


def _used_once(service: VolumeService) -> None:
    """A volume attached and detached once: no longer blank, so its attach records are
    the ones a host crash may lose."""
    service.create("vm1", "db", {"size": "8mb"})
    service.attach("vm1", "db")
    service.detach("vm1", "db", formatted=True)


def test_a_lost_attached_record_is_rebuilt_from_the_loop_table(service, local_backend,
                                                               losetup: FakeLosetup):
    _used_once(service)
    before = _file(local_backend, ".json").read_bytes()
    service.attach("vm1", "db")
    _file(local_backend, ".json").write_bytes(before)  # the crash lost the rename
    # a service restart on a living host: the loop device nobody recorded is released
    report = service.recover()
    assert report["detached"] == 1
    assert losetup.devices == {}
    assert service.get("vm1", "db")["status"] == "detached"
    assert service.attach("vm1", "db")["attach"]["device"]  # and the volume attaches again


def test_a_lost_attached_record_after_a_host_crash_leaves_the_volume_detached(
        service, local_backend, losetup: FakeLosetup):
    _used_once(service)
    before = _file(local_backend, ".json").read_bytes()
    service.attach("vm1", "db")
    _file(local_backend, ".json").write_bytes(before)
    losetup.devices.clear()  # the host went down: its loop devices with it
    service.recover()
    assert service.get("vm1", "db")["status"] == "detached"


def test_a_lost_detached_record_is_rebuilt_and_a_lost_formatted_flag_only_means_a_probe(
        service, local_backend, losetup: FakeLosetup):
    service.create("vm1", "db", {"size": "8mb", "access": "read-only"})
    service.attach("vm1", "db")
    attached = _file(local_backend, ".json").read_bytes()
    service.detach("vm1", "db", formatted=True)
    _file(local_backend, ".json").write_bytes(attached)  # the crash lost the rename
    losetup.devices.clear()  # ... and took the host's loop devices
    report = service.recover()
    assert report["detached"] == 1
    view = service.get("vm1", "db")
    assert (view["status"], view["attached_to"]) == ("detached", None)
    # formatted is back to False: the guest probes before any mkfs (and never formats a
    # disk with a filesystem), and the read-only volume is attached writable once more, as
    # before its first detach; the next detach records it again
    assert view["formatted"] is False
    answer = service.attach("vm1", "db")
    assert losetup.devices[answer["attach"]["device"]][1] is False
    service.detach("vm1", "db", formatted=True)
    assert service.get("vm1", "db")["formatted"] is True


@pytest.mark.parametrize("descriptor_lost", [True, False])
def test_a_create_cut_before_its_last_folder_fsync_is_undone_whole(
        service, local_backend, descriptor_lost):
    # What a host crash may leave of a create before the `detached` write's folder fsync:
    # the durable `creating` record, the fsynced extent, the descriptor or not.
    service.create("vm1", "db", {"size": "8mb"})
    meta = _file(local_backend, ".json")
    meta.write_text(meta.read_text().replace('"detached"', '"creating"'))
    # ... written before the disk, as the create wrote it (recovery keeps a disk older
    # than the `creating` record: not the create's)
    made = (meta.parent / "db-flat.vmdk").stat().st_mtime_ns - 10**9
    os.utime(meta, ns=(made, made))
    if descriptor_lost:
        _file(local_backend, ".vmdk").unlink()
    report = service.recover()
    assert report["cleaned"] == 1
    assert sorted(os.listdir(meta.parent)) == []  # no orphan extent, no metadata
    service.create("vm1", "db", {"size": "8mb"})  # and the name is free again
    assert service.get("vm1", "db")["status"] == "detached"


def test_only_a_write_marked_as_an_attachment_record_skips_the_folder_fsync(local_backend,
                                                                           monkeypatch):
    log = FsyncLog(monkeypatch)
    local_backend.write_metadata(LOC, {"name": "db"})
    assert log.take() == ["metadata", "folder"]
    local_backend.write_metadata(LOC, {"name": "db"}, attachment=True)
    assert log.take() == ["metadata"]


def test_a_crash_cannot_bring_blank_back_after_the_first_attach(service, local_backend,
                                                               losetup: FakeLosetup):
    service.create("vm1", "db", {"size": "8mb", "diskformat": "zeroedthick"})
    assert service.attach("vm1", "db")["blank"] is True
    # whatever a crash keeps now (the record's folder was fsynced), it is not blank: the
    # guest may have formatted and written the disk
    losetup.devices.clear()
    service.recover()
    assert service.get("vm1", "db")["blank"] is False
    assert "blank" not in service.attach("vm1", "db")


def _descriptor_lost(backend: LocalBackend) -> bytes:
    """What a host crash may leave of a descriptor written without fsync: the name, empty
    (ext4 and XFS commit a new file's size only with its data)."""
    descriptor = _file(backend, ".vmdk")
    before = descriptor.read_bytes()
    descriptor.write_bytes(b"")
    return before


@pytest.mark.parametrize("diskformat", ["thin", "zeroedthick"])
def test_a_volume_whose_descriptor_a_crash_emptied_attaches_reports_and_grows(
        service, local_backend, losetup: FakeLosetup, diskformat):
    service.create("vm1", "db", {"size": "8mb", "diskformat": diskformat})
    uuid = service.get("vm1", "db")["disk_uuid"]
    before = _descriptor_lost(local_backend)
    losetup.devices.clear()
    service.recover()
    view = service.get("vm1", "db")  # its allocation read from the default extent
    assert view["status"] == "detached" and view["allocated_mb"] >= 0
    answer = service.attach("vm1", "db")
    assert losetup.devices[answer["attach"]["device"]][0].endswith("db-flat.vmdk")
    service.detach("vm1", "db", formatted=True)
    # a grow, under the volume's lease, writes the descriptor again: same disk, new size
    service.resize("vm1", "db", "16mb")
    rebuilt = vmdk.parse_descriptor(_file(local_backend, ".vmdk").read_text())
    original = vmdk.parse_descriptor(before.decode())
    assert (rebuilt.extent_file, rebuilt.thin, rebuilt.uuid) == (
        original.extent_file, original.thin, uuid)
    assert rebuilt.size_bytes == 16 * 1024 * 1024
    assert os.path.getsize(_file(local_backend, "-flat.vmdk")) == 16 * 1024 * 1024


def test_a_volume_whose_descriptor_a_crash_emptied_is_cloned_and_removed_whole(
        service, local_backend):
    service.create("vm1", "db", {"size": "8mb"})
    _descriptor_lost(local_backend)
    service.create("vm1", "copy", {"clone-from": "db"})
    assert service.get("vm1", "copy")["capacity_mb"] == 8
    service.remove("vm1", "db")
    local_backend._trash.wait_empty(5)
    assert not [n for n in os.listdir(_file(local_backend, ".json").parent)
                if n.startswith("db")]


def test_a_create_cut_after_its_descriptor_was_emptied_is_undone_whole(service,
                                                                       local_backend):
    service.create("vm1", "db", {"size": "8mb"})
    meta = _file(local_backend, ".json")
    meta.write_text(meta.read_text().replace('"detached"', '"creating"'))
    _descriptor_lost(local_backend)
    assert service.recover()["cleaned"] == 1
    local_backend._trash.wait_empty(5)
    assert sorted(os.listdir(meta.parent)) == []


def test_only_an_empty_or_zeroed_descriptor_counts_as_lost(service, local_backend):
    service.create("vm1", "db", {"size": "8mb"})
    _file(local_backend, ".vmdk").write_bytes(b"\0" * 4096)
    assert service.get("vm1", "db")["status"] == "detached"
    _file(local_backend, ".vmdk").write_bytes(b"not a disk")
    with pytest.raises(BackendError, match="corrupt descriptor"):
        service.attach("vm1", "db")


def _record_lost(backend: LocalBackend, stem: str = "db") -> None:
    """A create cut by a host crash before its `detached` record: the `creating` record's
    name is there (journaled before the extent's), its content is not (never fsynced)."""
    folder = _file(backend, ".json").parent
    record = folder / f"{stem}.json"
    record.write_bytes(b"")
    # ... and its stamp is the `creating` write's, before the disk's: recovery keeps a disk
    # older than the record (made_before), which an emptying done here, after the
    # descriptor's, would date the disk as whenever the two straddle a clock tick
    disk = next(f for f in (folder / f"{stem}.vmdk", folder / f"{stem}-flat.vmdk")
                if f.exists())
    made = disk.stat().st_mtime_ns - 10**9
    os.utime(record, ns=(made, made))


@pytest.mark.parametrize("descriptor", ["emptied", "missing"])
def test_a_creating_record_whose_content_a_crash_lost_is_undone_by_recovery(
        service, local_backend, descriptor):
    service.create("vm1", "db", {"size": "8mb"})
    if descriptor == "emptied":
        _descriptor_lost(local_backend)
    else:  # the crash came before the descriptor's name
        _file(local_backend, ".vmdk").unlink()
    _record_lost(local_backend)
    assert service.list("vm1") == []  # a half-made volume is never shown
    with pytest.raises(VolumeNotFound):
        service.get("vm1", "db")
    assert service.recover()["cleaned"] == 1
    local_backend._trash.wait_empty(5)
    assert sorted(os.listdir(_file(local_backend, ".json").parent)) == []
    service.create("vm1", "db", {"size": "8mb"})
    assert service.get("vm1", "db")["status"] == "detached"


def test_a_creating_record_whose_content_a_crash_lost_is_undone_by_the_next_create(
        service, local_backend):
    service.create("vm1", "db", {"size": "8mb", "diskformat": "zeroedthick"})
    _descriptor_lost(local_backend)
    _record_lost(local_backend)
    view = service.create("vm1", "db", {"size": "12mb"})  # no recovery ran in between
    assert (view["status"], view["capacity_mb"]) == ("detached", 12)
    assert os.path.getsize(_file(local_backend, "-flat.vmdk")) == 12 * 1024 * 1024


def test_an_emptied_record_of_a_hashed_name_is_left_to_its_next_create(service,
                                                                      local_backend):
    long_name = "é" * 100  # its stem is cut and hashed: the name is not in it
    service.create("vm1", long_name, {"size": "8mb"})
    stem = next(n for n in os.listdir(_file(local_backend, ".json").parent)
                if n.endswith(".json"))[:-len(".json")]
    (_file(local_backend, ".json").parent / f"{stem}.vmdk").write_bytes(b"")
    _record_lost(local_backend, stem)
    assert service.list("vm1") == []
    service.recover()  # cannot name it: skipped, and harmless (never listed)
    view = service.create("vm1", long_name, {"size": "8mb"})
    assert view["status"] == "detached"


def test_a_record_emptied_beside_a_whole_descriptor_is_never_taken_for_a_cut_create(
        service, local_backend):
    # Not what a crash leaves (it empties the descriptor written after the record too):
    # a hand or a restore did this, and the volume's disk may hold data.
    service.create("vm1", "db", {"size": "8mb"})
    _record_lost(local_backend)
    report = service.recover()
    assert report["cleaned"] == 0
    assert _file(local_backend, ".vmdk").stat().st_size > 0
    assert _file(local_backend, "-flat.vmdk").exists()
    with pytest.raises(BackendError, match="descriptor is whole"):
        service.create("vm1", "db", {"size": "8mb"})
    assert _file(local_backend, "-flat.vmdk").exists()
