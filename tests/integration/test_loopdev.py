"""esx_service/loopdev.py against the real kernel: binding, read-only, release (also the
lazy release while someone else holds the device open), the race for a free device, and
capacity refresh. Root only; no dockerd needed."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dockvols_common.loop_table import backing_file, loop_table
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import VolumeInUse
from esx_service.loopdev import KernelLoopDevices
from plugin.blockdev import SystemBlockDevices
from plugin.filesystem import SystemMounter

SIZE = 16 * 1024 * 1024


def _wait_released(device: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while backing_file(device) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def images(tmp_path: Path):
    made = []

    def make(name: str = "a.img") -> str:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(SIZE)
        made.append(str(path))
        return str(path)

    yield make
    loops = KernelLoopDevices()
    for device, backing in loop_table():  # never leave a device bound to our files
        if backing in made:
            loops.detach(device, backing)


def test_attach_binds_the_file_and_detach_releases_it(images):
    loops = KernelLoopDevices()
    path = images()
    device = loops.attach(path, read_only=False)
    assert backing_file(device) == path
    assert Path(f"/sys/block/{os.path.basename(device)}/ro").read_text().strip() == "0"
    loops.detach(device, path)
    assert _wait_released(device)


def test_read_only_attach_makes_a_read_only_device(images):
    loops = KernelLoopDevices()
    path = images()
    device = loops.attach(path, read_only=True)
    assert Path(f"/sys/block/{os.path.basename(device)}/ro").read_text().strip() == "1"
    with pytest.raises(OSError):
        fd = os.open(device, os.O_WRONLY)
        try:
            os.write(fd, b"x" * 512)
            os.fsync(fd)
        finally:
            os.close(fd)
    loops.detach(device, path)


def test_detach_leaves_a_device_bound_to_another_file_alone(images):
    loops = KernelLoopDevices()
    mine, theirs = images("mine.img"), images("theirs.img")
    device = loops.attach(theirs, read_only=False)
    loops.detach(device, mine)  # the device was reused for someone else's file
    assert backing_file(device) == theirs
    loops.detach(device, theirs)
    assert _wait_released(device)
    loops.detach(device, theirs)  # not bound any more: fine


def test_a_device_held_open_is_released_when_its_last_opener_closes(images):
    loops = KernelLoopDevices()
    path = images()
    device = loops.attach(path, read_only=False)
    holder = os.open(device, os.O_RDONLY)  # as udev's probe does after an umount
    try:
        loops.detach(device, path)
        assert backing_file(device) == path  # lazy: still bound while held
    finally:
        os.close(holder)
    assert _wait_released(device)


def test_a_free_device_taken_by_someone_else_first_is_skipped(images, monkeypatch):
    loops = KernelLoopDevices()
    path, other = images("mine.img"), images("other.img")
    taken = loops.attach(other, read_only=False)
    answers = iter([taken])
    real_free = loops._free_device
    monkeypatch.setattr(loops, "_free_device", lambda: next(answers, None) or real_free())
    device = loops.attach(path, read_only=False)  # EBUSY on `taken`, then another device
    assert device != taken and backing_file(device) == path and backing_file(taken) == other
    loops.detach(device, path)
    loops.detach(taken, other)


def test_set_capacity_makes_the_device_take_the_new_file_size(images):
    loops = KernelLoopDevices()
    path = images()
    device = loops.attach(path, read_only=False)
    size = Path(f"/sys/block/{os.path.basename(device)}/size")
    assert int(size.read_text()) * 512 == SIZE
    os.truncate(path, 2 * SIZE)
    loops.set_capacity(device)
    assert int(size.read_text()) * 512 == 2 * SIZE
    loops.detach(device, path)


def test_a_device_on_a_deleted_extent_is_released_by_detach_and_by_recovery(tmp_path):
    """A volume's extent deleted while its loop device stays bound (a remove that raced an
    attach before leases, or a hand-made mess): the API's detach and recovery's orphan sweep
    both release it; a device on a live file of the same name is left alone."""
    root = tmp_path / "ds1"
    folder = root / "dockvols" / "_DEFAULT"
    backend = LocalBackend({"ds1": str(root)})
    loops = KernelLoopDevices()
    devices = []
    try:
        for name in ("db", "gone"):
            backend.create_disk(DiskLocation("ds1", "_DEFAULT", name), 8, "thin", None)
            devices.append(loops.attach(str(folder / f"{name}-flat.vmdk"), read_only=False))
        os.unlink(folder / "db-flat.vmdk")
        os.unlink(folder / "gone-flat.vmdk")
        assert backing_file(devices[0]) == f"{folder / 'db-flat.vmdk'} (deleted)"
        backend.create_disk(DiskLocation("ds1", "_DEFAULT", "db"), 8, "thin", None)  # anew
        live = loops.attach(str(folder / "db-flat.vmdk"), read_only=False)
        devices.append(live)
        backend.detach_disk(DiskLocation("ds1", "_DEFAULT", "db"), "vm1", {"device": live})
        assert _wait_released(live)
        assert backing_file(devices[0]) is not None  # not the attach the API was asked about
        backend.detach_disk(DiskLocation("ds1", "_DEFAULT", "db"), "vm1", None)
        assert _wait_released(devices[0])
        assert backing_file(devices[1]) is not None
        assert backend.release_orphans("ds1") == 1
        assert _wait_released(devices[1])
    finally:
        for device in devices:
            backing = backing_file(device)
            if backing and backing.removesuffix(" (deleted)").startswith(str(root)):
                loops.detach(device, backing)


def test_detaching_a_mounted_device_is_refused_and_arms_nothing(images, tmp_path):
    """A mounted device is refused at once (VolumeInUse naming device and file): no
    LOOP_CLR_FD, whose autoclear used to free the device at the umount and made the local
    backend wait 5 s for it. The plugin's probe (plugin/blockdev.py) sees the same claim."""
    loops = KernelLoopDevices(busy_wait=30.0)
    path = images()
    device = loops.attach(path, read_only=False)
    subprocess.run(["mkfs.ext4", "-q", device], check=True, capture_output=True)
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", device, str(target)], check=True, capture_output=True)
    try:
        assert SystemBlockDevices().claimed(device)
        started = time.monotonic()
        with pytest.raises(VolumeInUse) as caught:
            loops.detach(device, path)
        assert time.monotonic() - started < 10, "a mount here is not waited on"
        assert f"loop device {device} of {path} is mounted on {target}" in caught.value.message
        (target / "f").write_text("kept")
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)
    time.sleep(0.5)  # an armed autoclear frees the device at the last close, at once
    assert backing_file(device) == path
    assert not SystemBlockDevices().claimed(device)
    loops.detach(device, path)
    assert _wait_released(device)


def _claim_for(device: str, seconds: float) -> threading.Thread:
    """Hold ``device`` O_EXCL for ``seconds``, as a container's copy of a mount does for a
    moment after the volume's umount."""
    fd = os.open(device, os.O_RDONLY | os.O_EXCL)

    def release() -> None:
        time.sleep(seconds)
        os.close(fd)
    holder = threading.Thread(target=release)
    holder.start()
    return holder


def test_a_claim_that_lingers_after_the_umount_is_waited_out(images):
    loops = KernelLoopDevices(busy_wait=5.0)
    path = images()
    device = loops.attach(path, read_only=False)
    holder = _claim_for(device, 0.3)
    try:
        loops.detach(device, path)
        assert _wait_released(device)
    finally:
        holder.join()
        if backing_file(device) == path:
            loops.detach(device, path)


def test_a_claim_held_past_the_wait_is_refused_and_nothing_is_detached(images):
    loops = KernelLoopDevices(busy_wait=0.3)
    path = images()
    device = loops.attach(path, read_only=False)
    holder = _claim_for(device, 1.5)
    try:
        with pytest.raises(VolumeInUse) as caught:
            loops.detach(device, path)
        assert f"loop device {device} of {path} is mounted or held exclusively" in \
            caught.value.message
        holder.join()
        assert backing_file(device) == path
    finally:
        holder.join()
        loops.detach(device, path)
    assert _wait_released(device)


def test_a_mount_point_is_told_by_two_stats_as_the_mount_table_tells_it(images, tmp_path):
    mounter = SystemMounter()
    loops = KernelLoopDevices()
    path = images()
    device = loops.attach(path, read_only=False)
    target = str(tmp_path / "mnt" / "db@ds1")
    try:
        mounter.mkfs(device, "ext4", "db")
        assert not mounter.is_mount_point(target)  # not even there yet
        mounter.mount(device, target, "ext4", read_only=False)
        assert mounter.is_mount_point(target)
        assert target in mounter.mounts_under(str(tmp_path / "mnt"))
        os.makedirs(os.path.join(target, "sub"))
        assert not mounter.is_mount_point(os.path.join(target, "sub"))
        mounter.umount(target)
        os.makedirs(target)  # an empty folder left where the mount was
        assert not mounter.is_mount_point(target)
        assert target not in mounter.mounts_under(str(tmp_path / "mnt"))
    finally:
        if mounter.is_mount_point(target):
            mounter.umount(target)
        loops.detach(device, path)


def test_the_partitions_list_finds_every_bound_device_a_full_scan_finds(images):
    loops = KernelLoopDevices()
    paths = [images(f"{n}.img") for n in "abc"]
    devices = [loops.attach(p, read_only=n == 1) for n, p in enumerate(paths)]
    try:
        ours = {d: b for d, b in loop_table() if b in paths}
        assert ours == dict(zip(devices, paths, strict=True))
        assert {d: b for d, b in loop_table(partitions="/proc/partitions")
                if b in paths} == ours
    finally:
        for device, path in zip(devices, paths, strict=True):
            loops.detach(device, path)
