"""Which fsyncs the local backend's life cycle makes, and why the ones it leaves out lose
nothing: the records a host crash may lose (issue 15) are rebuilt by recovery from the
loop table, and a create whose last folder fsync never happened is undone whole.

A lost rename is played by putting back the file as it was before the write: that is all a
host crash can leave of a write whose file was fsynced but whose folder was not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockvols_common import atomic
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
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
    assert log.take() == ["metadata", *written, "descriptor", "metadata", "folder"]
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
    # `creating` whole before the disk exists, its name journaled before the extent's; the
    # thin extent has no data, and its inode goes with the descriptor's fsync; every name
    # made durable by the `detached` write's folder fsync, the last step before the create
    # answers
    assert log.take() == ["metadata", "descriptor", "metadata", "folder"]
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
