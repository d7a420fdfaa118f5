"""The loop ioctl structures, checked against the kernel's uapi layout (linux/loop.h); the
refusal to detach a mounted device."""

from __future__ import annotations

import errno
import os

import pytest

from esx_service import loopdev
from esx_service.errors import VolumeInUse


def test_loop_info64_and_loop_config_have_the_kernel_sizes():
    assert loopdev._INFO64.size == 232
    assert loopdev._CONFIG.size == 304


def test_info64_carries_the_read_only_flag_and_a_truncated_name():
    long_path = "/" + "d" * 100
    fields = loopdev._INFO64.unpack(loopdev._info64(long_path, read_only=True))
    assert fields[loopdev._INFO_FLAGS] == loopdev.LO_FLAGS_READ_ONLY
    assert fields[9].rstrip(b"\0") == os.fsencode(long_path)[:63]
    writable = loopdev._INFO64.unpack(loopdev._info64("/x", read_only=False))
    assert writable[loopdev._INFO_FLAGS] == 0


def test_config_starts_with_the_backing_fd_and_block_size():
    packed = loopdev._CONFIG.pack(7, 0, loopdev._info64("/x", False))
    assert packed[:8] == (7).to_bytes(4, "little") + bytes(4)


def test_kernel_dev_encoding_matches_new_encode_dev():
    assert loopdev._kernel_dev(os.makedev(253, 1)) == (253 << 8) | 1
    assert loopdev._kernel_dev(os.makedev(0, 300)) == (300 & 0xFF) | ((300 & ~0xFF) << 12)


def test_detaching_a_mounted_device_is_refused_at_once_and_changes_nothing(monkeypatch):
    """The exclusive open answers EBUSY while a filesystem on the device is mounted: no
    LOOP_CLR_FD (which would arm autoclear and leave the caller waiting 5 s in vain)."""
    ioctls = []

    def busy(path, flags, *args):
        assert flags & os.O_EXCL
        raise OSError(errno.EBUSY, "Device or resource busy", path)

    monkeypatch.setattr(loopdev.os, "open", busy)
    monkeypatch.setattr(loopdev.fcntl, "ioctl", lambda *a: ioctls.append(a))
    with pytest.raises(VolumeInUse) as caught:
        loopdev.KernelLoopDevices().detach("/dev/loop7", "/ds/db-flat.vmdk")
    assert "loop device /dev/loop7 of /ds/db-flat.vmdk is mounted" in caught.value.message
    assert ioctls == []
