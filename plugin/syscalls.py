"""mount(2) and umount2(2) through ctypes: a `mount` or `umount` process per volume costs a
fork+exec (and libmount's parsing of the mount table) for one system call."""

from __future__ import annotations

import ctypes
import errno
import os

MS_RDONLY = 1

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python already uses
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                   ctypes.c_void_p]
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_umount2.restype = ctypes.c_int

# What mount(2) answers, said the way `mount` would say it.
_MOUNT_REASONS = {
    errno.EBUSY: "the device is already mounted or the target is busy",
    errno.EINVAL: "bad superblock, or not a filesystem of that type",
    errno.ENODEV: "the kernel does not support that filesystem type",
    errno.ENOENT: "the device or the mount point does not exist",
    errno.ENOTBLK: "the source is not a block device",
    errno.ENXIO: "the device is not there (detached?)",
    errno.EACCES: "the device is read-only; mount it read-only",
    errno.EROFS: "the device is read-only; mount it read-only",
    errno.EPERM: "not permitted (CAP_SYS_ADMIN is needed)",
}
_UMOUNT_REASONS = {
    errno.EBUSY: "the filesystem is busy (a process still uses it)",
    errno.EINVAL: "it is not a mount point",
    errno.ENOENT: "no such directory",
    errno.EPERM: "not permitted (CAP_SYS_ADMIN is needed)",
}


class SyscallError(OSError):
    """An OSError whose message says what was attempted and why the kernel refused."""


def mount(device: str, target: str, fstype: str, read_only: bool) -> None:
    flags = MS_RDONLY if read_only else 0
    if _mount(os.fsencode(device), os.fsencode(target), fstype.encode(), flags, None) != 0:
        code = ctypes.get_errno()
        reason = _MOUNT_REASONS.get(code, os.strerror(code))
        raise SyscallError(code, f"mount -t {fstype} {device} {target}: {reason} "
                                 f"(errno {errno.errorcode.get(code, code)})")


def umount(target: str) -> None:
    if _umount2(os.fsencode(target), 0) != 0:
        code = ctypes.get_errno()
        reason = _UMOUNT_REASONS.get(code, os.strerror(code))
        raise SyscallError(code, f"umount {target}: {reason} "
                                 f"(errno {errno.errorcode.get(code, code)})")
