"""What the plugin needs to know about a block device to grow the filesystem on it: the
device's size, making it see that its disk grew (rescan), and how big the filesystem on it
says it is (read from the superblock, before mounting)."""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Protocol

from .errors import DeviceError

BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): the device's size in bytes
LOOP_SET_CAPACITY = 0x4C07  # a loop device re-reads its backing file's size
_EXT4_MAGIC = 0xEF53
_EXT4_INCOMPAT_64BIT = 0x80
_HEAD = 4096  # both superblocks are within the first 4 KiB


class BlockDevices(Protocol):
    def size(self, device: str) -> int:
        """The device's size in bytes, as the kernel sees it now."""

    def rescan(self, device: str) -> None:
        """Make the kernel re-read the size of the disk behind ``device``."""

    def filesystem_size(self, device: str, fstype: str) -> int | None:
        """Bytes the filesystem on ``device`` spans (its superblock), None if unknown."""


def superblock_size(fstype: str, head: bytes) -> int | None:
    """The size a filesystem's superblock records, from the device's first 4 KiB."""
    if fstype == "ext4" and len(head) >= 1024 + 0x154:
        sb = head[1024:]
        if struct.unpack_from("<H", sb, 0x38)[0] != _EXT4_MAGIC:
            return None
        blocks = struct.unpack_from("<I", sb, 0x4)[0]
        if struct.unpack_from("<I", sb, 0x60)[0] & _EXT4_INCOMPAT_64BIT:
            blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        return blocks * (1024 << struct.unpack_from("<I", sb, 0x18)[0])
    if fstype == "xfs" and len(head) >= 16 and head[:4] == b"XFSB":
        block_size, data_blocks = struct.unpack_from(">IQ", head, 4)
        return block_size * data_blocks
    return None


class SystemBlockDevices:
    """The real thing: ioctls on the device node, and sysfs for a SCSI rescan."""

    def __init__(self, sys_block: str = "/sys/class/block") -> None:
        self.sys_block = sys_block

    def size(self, device: str) -> int:
        try:
            fd = os.open(device, os.O_RDONLY)
            try:
                raw = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeviceError(f"cannot read the size of {device}: {exc}") from exc
        return int(struct.unpack("=Q", raw)[0])

    def rescan(self, device: str) -> None:
        name = os.path.basename(os.path.realpath(device))
        try:
            if name.startswith("loop"):
                fd = os.open(device, os.O_RDONLY)
                try:
                    fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
                finally:
                    os.close(fd)
            else:  # a SCSI disk (vsphere): ask the disk for its capacity again
                with open(os.path.join(self.sys_block, name, "device", "rescan"), "w",
                          encoding="ascii") as f:
                    f.write("1")
        except OSError as exc:
            raise DeviceError(f"cannot rescan {device} for its new size: {exc}") from exc

    def filesystem_size(self, device: str, fstype: str) -> int | None:
        try:
            with open(device, "rb") as f:
                return superblock_size(fstype, f.read(_HEAD))
        except OSError:
            return None  # unknown: the caller grows to be sure (a no-op when not needed)
