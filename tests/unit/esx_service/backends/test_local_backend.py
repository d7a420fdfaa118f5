"""LocalBackend on real files in tmp_path; losetup is played by FakeLosetup."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from esx_service import file_cache
from esx_service.backends import local as local_module
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import (
    BackendError,
    InsufficientSpace,
    InvalidOption,
    UnknownDatastore,
    VolumeInUse,
)
from esx_service.options import MB
from esx_service.vmdk import parse_descriptor
from esx_service.volumes import VolumeService

LOC = DiskLocation("ds1", "_DEFAULT", "db")


def _files(backend: LocalBackend, loc: DiskLocation = LOC) -> tuple[str, str]:
    folder = os.path.join(backend._paths[loc.datastore], loc.folder)
    return os.path.join(folder, f"{loc.name}.vmdk"), os.path.join(folder, f"{loc.name}-flat.vmdk")


def test_datastores_are_directories_with_real_free_space(local_backend, tmp_path):
    infos = {d.name: d for d in local_backend.datastores()}
    assert set(infos) == {"ds1", "ds2"}
    assert infos["ds1"].type == "local"
    assert infos["ds1"].url == f"file://{tmp_path / 'ds1'}"
    assert 0 < infos["ds1"].free_bytes <= infos["ds1"].capacity_bytes
    assert (tmp_path / "ds1" / "dockvols").is_dir()


def test_a_thin_extent_is_sparse(local_backend):
    local_backend.create_disk(LOC, 64, "thin", None)
    _, extent = _files(local_backend)
    st = os.stat(extent)
    assert st.st_size == 64 * MB
    assert st.st_blocks * 512 < MB
    assert local_backend.disk_allocated_bytes(LOC) == st.st_blocks * 512


def test_the_allocation_follows_a_descriptor_rewritten_to_name_another_extent(local_backend):
    """The extent's name is kept from a descriptor old enough to cache (issue 15), and a
    rewrite (new inode, new times) is seen at the next read."""
    local_backend.create_disk(LOC, 64, "thin", None)
    descriptor, extent = _files(local_backend)
    old = time.time() - 60
    os.utime(descriptor, (old, old))  # past the racy window: this read is kept
    thin = local_backend.disk_allocated_bytes(LOC)
    assert thin == local_backend.disk_allocated_bytes(LOC)
    other = os.path.join(os.path.dirname(extent), "other-flat.vmdk")
    with open(other, "wb") as f:
        f.write(b"x" * (4 * MB))
        f.flush()
        os.fsync(f.fileno())
    with open(descriptor) as f:
        text = f.read().replace("db-flat.vmdk", "other-flat.vmdk")
    os.rename(_write(descriptor + ".new", text), descriptor)
    assert local_backend.disk_allocated_bytes(LOC) == os.stat(other).st_blocks * 512 > thin
    with open(descriptor, "w") as f:
        f.write("garbage")
    with pytest.raises(BackendError, match="corrupt descriptor"):
        local_backend.disk_allocated_bytes(LOC)


def _write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("diskformat", ["zeroedthick", "eagerzeroedthick"])
def test_thick_extents_are_allocated(local_backend, diskformat):
    local_backend.create_disk(LOC, 8, diskformat, None)
    _, extent = _files(local_backend)
    assert os.stat(extent).st_size == 8 * MB
    assert os.stat(extent).st_blocks * 512 >= 8 * MB
    with open(extent, "rb") as f:
        assert f.read() == bytes(8 * MB)


@pytest.mark.parametrize("diskformat,thin", [("thin", True), ("zeroedthick", False)])
def test_the_descriptor_names_the_extent(local_backend, diskformat, thin):
    disk_uuid = local_backend.create_disk(LOC, 8, diskformat, None)
    descriptor, extent = _files(local_backend)
    with open(descriptor) as f:
        desc = parse_descriptor(f.read())
    assert desc.extent_file == os.path.basename(extent) == "db-flat.vmdk"
    assert desc.size_bytes == 8 * MB
    assert desc.thin is thin
    assert desc.uuid == disk_uuid


def test_delete_removes_descriptor_and_extent_and_is_idempotent(local_backend):
    local_backend.create_disk(LOC, 8, "thin", None)
    local_backend.delete_disk(LOC)
    assert not any(os.path.exists(p) for p in _files(local_backend))
    local_backend.delete_disk(LOC)
    assert local_backend.disk_allocated_bytes(LOC) == 0


def test_clone_copies_the_data_and_keeps_holes_for_thin(local_backend):
    local_backend.create_disk(LOC, 16, "thin", None)
    _, extent = _files(local_backend)
    with open(extent, "r+b") as f:
        f.seek(0)
        f.write(b"superblock")
        f.seek(12 * MB)
        f.write(b"data near the end")
    dst = DiskLocation("ds2", "_DEFAULT", "copy")
    local_backend.clone_disk(LOC, dst, "thin")
    _, copy_extent = _files(local_backend, dst)
    with open(extent, "rb") as a, open(copy_extent, "rb") as b:
        assert a.read() == b.read()
    assert os.stat(copy_extent).st_size == 16 * MB
    assert os.stat(copy_extent).st_blocks * 512 < 16 * MB  # holes stay holes


def test_a_thick_clone_is_allocated(local_backend):
    local_backend.create_disk(LOC, 8, "thin", None)
    dst = DiskLocation("ds1", "_DEFAULT", "copy")
    local_backend.clone_disk(LOC, dst, "eagerzeroedthick")
    _, copy_extent = _files(local_backend, dst)
    assert os.stat(copy_extent).st_blocks * 512 >= 8 * MB


def test_an_existing_extent_is_never_overwritten(local_backend):
    _, extent = _files(local_backend)
    os.makedirs(os.path.dirname(extent))
    with open(extent, "wb") as f:
        f.write(b"someone's data")
    with pytest.raises(BackendError, match="already exists"):
        local_backend.create_disk(LOC, 8, "thin", None)
    with open(extent, "rb") as f:
        assert f.read() == b"someone's data"


def test_out_of_space_is_insufficient_space_and_leaves_no_files(local_backend, monkeypatch):
    def enospc(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(local_module.os, "posix_fallocate", enospc)
    with pytest.raises(InsufficientSpace, match="ds1"):
        local_backend.create_disk(LOC, 8, "zeroedthick", None)
    assert not any(os.path.exists(p) for p in _files(local_backend))


def test_a_failed_descriptor_write_leaves_no_extent(local_backend, monkeypatch):
    def eio(*_a, **_kw):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(local_module, "atomic_write_bytes", eio)
    with pytest.raises(BackendError, match="creating disk"):
        local_backend.create_disk(LOC, 8, "thin", None)
    assert not any(os.path.exists(p) for p in _files(local_backend))


def test_a_vsan_policy_is_refused(local_backend):
    with pytest.raises(InvalidOption, match="vsan-policy-name .gold. needs the vsphere backend"):
        local_backend.create_disk(LOC, 8, "thin", "gold")


def test_an_unknown_datastore_is_refused(local_backend):
    with pytest.raises(UnknownDatastore):
        local_backend.read_metadata(DiskLocation("nope", "_DEFAULT", "db"))


def test_metadata_round_trips_and_lists_across_vmgroups(local_backend):
    local_backend.write_metadata(LOC, {"name": "db", "n": 1})
    local_backend.write_metadata(DiskLocation("ds1", "other", "x"), {"name": "x"})
    assert local_backend.read_metadata(LOC) == {"name": "db", "n": 1}
    assert sorted(d["name"] for d in local_backend.list_metadata("ds1")) == ["db", "x"]
    assert local_backend.list_metadata("ds2") == []
    local_backend.delete_metadata(LOC)
    local_backend.delete_metadata(LOC)
    assert local_backend.read_metadata(LOC) is None


def test_list_ignores_hidden_temp_files_and_disk_files(local_backend):
    local_backend.write_metadata(LOC, {"name": "db"})
    local_backend.create_disk(LOC, 8, "thin", None)
    folder = os.path.dirname(_files(local_backend)[0])
    with open(os.path.join(folder, ".db.json.tmp-123"), "w") as f:
        f.write("{half")
    assert local_backend.list_metadata("ds1") == [{"name": "db"}]


def test_unreadable_metadata_is_a_backend_error_naming_the_file(local_backend):
    local_backend.write_metadata(LOC, {"name": "db"})
    with open(os.path.join(local_backend._paths["ds1"], LOC.metadata_path), "w") as f:
        f.write("{not json")
    with pytest.raises(BackendError, match="db.json"):
        local_backend.read_metadata(LOC)


def test_one_corrupt_metadata_file_does_not_hide_the_other_volumes(local_backend):
    service = VolumeService(local_backend)
    service.create("vm1", "good", {})
    service.create("vm1", "bad", {})
    with open(os.path.join(local_backend._paths["ds1"], "dockvols/_DEFAULT/bad.json"), "w") as f:
        f.write("{truncated")
    assert [v["name"] for v in service.list("vm1")] == ["good@ds1"]
    service.recover()


def test_attach_runs_losetup_on_the_extent(local_backend, losetup):
    local_backend.create_disk(LOC, 8, "thin", None)
    _, extent = _files(local_backend)
    info = local_backend.attach_disk(LOC, "vm1", False, "persistent")
    assert info == {"kind": "loop", "device": "/dev/loop0"}
    assert losetup.argvs[-1] == ["losetup", "--find", "--show", extent]
    assert local_backend.is_attached(LOC, "vm1", info)
    assert local_backend.is_attached(LOC, "", None)
    assert not local_backend.is_attached(LOC, "vm1", {"kind": "loop", "device": "/dev/loop9"})


def test_read_only_attach_asks_for_a_read_only_loop(local_backend, losetup):
    local_backend.create_disk(LOC, 8, "thin", None)
    local_backend.attach_disk(LOC, "vm1", True, "persistent")
    assert "--read-only" in losetup.argvs[-1]


def test_detach_removes_every_loop_device_of_the_extent_and_is_idempotent(local_backend,
                                                                           losetup):
    local_backend.create_disk(LOC, 8, "thin", None)
    other = DiskLocation("ds1", "_DEFAULT", "other")
    local_backend.create_disk(other, 8, "thin", None)
    local_backend.attach_disk(LOC, "vm1", False, "persistent")
    local_backend.attach_disk(LOC, "vm1", False, "persistent")
    local_backend.attach_disk(other, "vm1", False, "persistent")
    local_backend.detach_disk(LOC, "vm1", None)
    assert not local_backend.is_attached(LOC, "", None)
    assert local_backend.is_attached(other, "", None)
    local_backend.detach_disk(LOC, "vm1", None)


def test_loop_devices_of_deleted_files_are_not_ours(local_backend):
    local_backend.create_disk(LOC, 8, "thin", None)
    _, extent = _files(local_backend)
    backend = LocalBackend(local_backend._paths,
                           run=lambda argv, timeout=60.0: f"/dev/loop4 {extent} (deleted)\n")
    assert not backend.is_attached(LOC, "", None)


def test_attach_of_a_missing_extent_is_a_backend_error(local_backend):
    with pytest.raises(BackendError, match="missing"):
        local_backend.attach_disk(LOC, "vm1", False, "persistent")


def test_a_corrupt_descriptor_is_a_backend_error(local_backend):
    local_backend.create_disk(LOC, 8, "thin", None)
    with open(_files(local_backend)[0], "w") as f:
        f.write("garbage")
    with pytest.raises(BackendError, match="corrupt descriptor"):
        local_backend.attach_disk(LOC, "vm1", False, "persistent")


def test_metadata_files_are_json_beside_the_disk(local_backend, tmp_path):
    service = VolumeService(local_backend)
    service.create("vm1", "db", {"size": "8mb"})
    folder = tmp_path / "ds1" / "dockvols" / "_DEFAULT"
    assert sorted(os.listdir(folder)) == ["db-flat.vmdk", "db.json", "db.vmdk"]
    assert json.loads((folder / "db.json").read_text())["status"] == "detached"


def _sysfs_backend(tmp_path, run) -> tuple[LocalBackend, str]:
    sysfs = tmp_path / "sys-block"
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=run)
    backend._sysfs_block = str(sysfs)  # the real sysfs reader over a fake /sys/block
    backend.create_disk(LOC, 8, "thin", None)
    return backend, str(sysfs)


def _bind(sysfs: str, device: str, backing: str) -> None:
    os.makedirs(os.path.join(sysfs, device, "loop"), exist_ok=True)
    with open(os.path.join(sysfs, device, "loop", "backing_file"), "w") as f:
        f.write(backing + "\n")


@pytest.mark.parametrize("code", [errno.ENODEV, errno.ENXIO, errno.ENOENT])
def test_a_loop_device_torn_down_while_sysfs_is_read_is_not_an_error(
        tmp_path, losetup, monkeypatch, code):
    backend, sysfs = _sysfs_backend(tmp_path, losetup)
    _, extent = _files(backend)
    _bind(sysfs, "loop0", extent)
    _bind(sysfs, "loop1", "/elsewhere")
    real_open = os.open

    def tearing_down(path, *args, **kwargs):
        if "loop1" in str(path):
            raise OSError(code, os.strerror(code))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", tearing_down)
    assert backend.is_attached(LOC, "vm1", None)
    assert backend._loop_table() == [("/dev/loop0", extent)]


def test_an_unexpected_sysfs_error_names_the_file(tmp_path, losetup, monkeypatch):
    backend, sysfs = _sysfs_backend(tmp_path, losetup)
    _bind(sysfs, "loop0", "/x")
    real_open = os.open

    def eio(path, *args, **kwargs):
        if "loop0" in str(path):
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", eio)
    with pytest.raises(BackendError, match="loop0.*Input/output error"):
        backend.is_attached(LOC, "vm1", None)


@pytest.fixture
def trusting(monkeypatch):
    """Listings keep a file's parsed form however fresh the file (no racy margin)."""
    monkeypatch.setattr(file_cache, "RACY_SECONDS", 0.0)


def _age_metadata(backend: LocalBackend) -> None:
    time.sleep(0.02)  # past a coarse timestamp tick


def test_a_listing_sees_what_another_host_changed_since_the_last_one(tmp_path, losetup,
                                                                    trusting):
    here = VolumeService(LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup))
    there = VolumeService(LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup))
    here.create("vm1", "db", {})
    here.create("vm1", "logs", {})
    _age_metadata(here.backend)
    assert [v["status"] for v in here.list("vm1")] == ["detached", "detached"]
    assert [v["status"] for v in here.list("vm1")] == ["detached", "detached"]  # cached
    there.attach("vm2", "db")
    there.remove("vm1", "logs")
    there.create("vm1", "new", {})
    assert [(v["volume"], v["status"], v["attached_to"]) for v in here.list("vm1")] == [
        ("db", "attached", "vm2"), ("new", "detached", None)]
    assert json.loads(here.list_json("vm1")) == {"volumes": here.list("vm1")}


def test_a_listing_parses_an_unchanged_metadata_file_once(tmp_path, losetup, trusting,
                                                          monkeypatch):
    local_backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup)
    service = VolumeService(local_backend)
    service.create("vm1", "db", {})
    _age_metadata(local_backend)
    service.list("vm1")
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open",
                        lambda *a, **k: (reads.append(a[0]), real_open(*a, **k))[1])
    assert [v["name"] for v in service.list("vm1")] == ["db@ds1"]
    assert not [p for p in reads if str(p).endswith(".json")]


class _MountedLoops(local_module.LosetupLoopDevices):
    """losetup whose devices in ``mounted`` have a filesystem mounted (the kernel loop
    devices answer that with VolumeInUse, tests/integration/test_loopdev.py)."""

    def __init__(self, run) -> None:
        super().__init__(run)
        self.mounted: set[str] = set()

    def detach(self, device: str, path: str) -> None:
        if device in self.mounted:
            raise VolumeInUse(f"loop device {device} of {path} is mounted or held exclusively "
                              "on this host; unmount it first (nothing was detached)")
        super().detach(device, path)


def test_a_detach_of_a_mounted_volume_is_refused_naming_it_and_its_device(tmp_path, losetup):
    loops = _MountedLoops(losetup)
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup, loops=loops)
    service = VolumeService(backend)
    service.create("vm1", "db", {})
    device = service.attach("vm1", "db")["attach"]["device"]
    loops.mounted.add(device)
    with pytest.raises(VolumeInUse) as caught:
        service.detach("vm1", "db")
    assert f"cannot detach db@ds1: loop device {device} of" in caught.value.message
    assert service.get("vm1", "db")["attached_to"] == "vm1"  # nothing changed
    assert backend.is_attached(LOC, "vm1", None)
    loops.mounted.clear()
    service.detach("vm1", "db")
    assert service.get("vm1", "db")["attached_to"] is None


def test_a_datastore_reached_through_a_symlink_finds_its_loop_devices_by_the_real_path(
        tmp_path, losetup):
    # sysfs names the backing file as the kernel resolved it: the real path
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "ds1")
    backend, sysfs = _sysfs_backend(tmp_path, losetup)
    _, extent = _files(backend)
    real = os.path.realpath(extent)
    assert real != extent
    _bind(sysfs, "loop3", real)
    _bind(sysfs, "loop4", real + " (deleted)")
    _bind(sysfs, "loop5", "/elsewhere/db-flat.vmdk")
    assert backend._loop_devices_of(extent) == ["/dev/loop3"]
    assert backend._loops_on(extent, deleted=True) == [
        ("/dev/loop3", real), ("/dev/loop4", real + " (deleted)")]
