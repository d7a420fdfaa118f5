"""What the plugin needs to know about a block device to grow the filesystem on it: the
device's size, making it see that its disk grew (rescan), and how big the filesystem on it
says it is (read from the superblock, before mounting); and whether anything holds it (the
reconcile's last check before releasing a disk nobody recorded)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from typing import Protocol

from .errors import DeviceError
from .superblock import filesystem_bytes

BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): the device's size in bytes
LOOP_SET_CAPACITY = 0x4C07  # a loop device re-reads its backing file's size
_HEAD = 4096  # both superblocks are within the first 4 KiB
log = logging.getLogger("dockvols.plugin")


class BlockDevices(Protocol):
    def size(self, device: str) -> int:
        """The device's size in bytes, as the kernel sees it now."""

    def rescan(self, device: str) -> None:
        """Make the kernel re-read the size of the disk behind ``device``."""

    def filesystem_size(self, device: str, fstype: str) -> int | None:
        """Bytes the filesystem on ``device`` spans (its superblock), None if unknown."""

    def claimed(self, device: str) -> bool:
        """Whether something holds ``device`` exclusively now: a mount in any mount
        namespace, mkfs, e2fsck."""


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
                return filesystem_bytes(fstype, f.read(_HEAD))
        except OSError:
            return None  # unknown: the caller grows to be sure (a no-op when not needed)

    def claimed(self, device: str) -> bool:
        # O_EXCL on a block device claims it: EBUSY while a filesystem on it is mounted in
        # any mount namespace (a managed plugin's mounts are not in this one's table) or
        # mkfs/e2fsck hold it. The claim is dropped at once by the close.
        try:
            fd = os.open(device, os.O_RDONLY | os.O_EXCL)
        except FileNotFoundError:
            return False  # gone: nothing can hold it
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot tell whether %s is in use (%s): taken as in use", device,
                            exc)
            return True
        os.close(fd)
        return False
