"""Filesystem sizes from superblocks (plugin/superblock.py): hand-built ones, and ones real
mkfs made on files; the device size and rescan of plugin/blockdev.py."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from plugin.blockdev import SystemBlockDevices
from plugin.errors import DeviceError
from plugin.filesystem import _MKFS
from plugin.superblock import filesystem_bytes

MB = 1024 * 1024


def ext4_head(blocks: int, log_block: int, hi: int | None = None) -> bytes:
    sb = bytearray(1024)
    struct.pack_into("<I", sb, 0x4, blocks & 0xFFFFFFFF)
    struct.pack_into("<I", sb, 0x18, log_block)
    struct.pack_into("<H", sb, 0x38, 0xEF53)
    if hi is not None:
        struct.pack_into("<I", sb, 0x60, 0x80)
        struct.pack_into("<I", sb, 0x150, hi)
    return bytes(1024) + bytes(sb) + bytes(2048)


def test_ext4_size_is_blocks_times_block_size_with_the_64bit_high_word():
    assert filesystem_bytes("ext4", ext4_head(25600, 2)) == 25600 * 4096
    assert filesystem_bytes("ext4", ext4_head(5, 2, hi=1)) == ((1 << 32) + 5) * 4096


def test_xfs_size_is_data_blocks_times_block_size():
    head = b"XFSB" + struct.pack(">IQ", 4096, 76800) + bytes(4080)
    assert filesystem_bytes("xfs", head) == 76800 * 4096


def test_no_or_another_filesystem_is_unknown():
    assert filesystem_bytes("ext4", bytes(4096)) is None
    assert filesystem_bytes("xfs", bytes(4096)) is None
    assert filesystem_bytes("btrfs", ext4_head(1, 2)) is None


@pytest.mark.parametrize("fstype,size_mb", [("ext4", 64), ("xfs", 300)])
def test_real_mkfs_superblocks_span_the_whole_device(tmp_path, fstype, size_mb):
    if shutil.which(_MKFS[fstype][0]) is None:
        pytest.fail(f"{_MKFS[fstype][0]} is missing (scripts/install-deps.sh installs it)")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(size_mb * MB)
    subprocess.run(_MKFS[fstype] + [str(image)], check=True, capture_output=True)
    assert SystemBlockDevices().filesystem_size(str(image), fstype) == size_mb * MB


def test_the_size_of_something_that_is_not_a_block_device_is_a_device_error(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with pytest.raises(DeviceError, match=f"cannot read the size of {path}"):
        SystemBlockDevices().size(str(path))


def test_a_scsi_disk_is_rescanned_through_its_sysfs_rescan_file(tmp_path):
    """vsphere: after the VM's disk is reconfigured bigger, the guest asks the disk for its
    capacity again. (A unit test on a fake sysfs: no SCSI disk is hot-grown on this host.)"""
    rescan = tmp_path / "sdq" / "device" / "rescan"
    rescan.parent.mkdir(parents=True)
    rescan.write_text("")
    SystemBlockDevices(sys_block=str(tmp_path)).rescan("/dev/sdq")
    assert rescan.read_text() == "1"


def test_a_rescan_that_cannot_be_done_is_a_device_error_naming_the_device(tmp_path):
    with pytest.raises(DeviceError, match="cannot rescan /dev/sdz for its new size"):
        SystemBlockDevices(sys_block=str(tmp_path)).rescan("/dev/sdz")


def test_a_device_that_is_gone_or_not_a_block_device_is_not_claimed(tmp_path):
    """The exclusive-open probe (EBUSY on a mounted block device is proven with real loop
    devices in tests/integration/test_loopdev.py)."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"\0" * 4096)
    assert SystemBlockDevices().claimed(str(tmp_path / "missing")) is False
    assert SystemBlockDevices().claimed(str(plain)) is False
