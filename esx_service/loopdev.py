"""Loop devices through /dev/loop-control and the loop ioctls, without a `losetup` process.

`losetup --find --show` costs a fork+exec of a binary that then does the same three system
calls this module does (LOOP_CTL_GET_FREE, open, LOOP_CONFIGURE). Stdlib only (fcntl.ioctl,
struct), as esx_service must run on the host's Python.

The kernel facts this code is written against (drivers/block/loop.c):
- LOOP_CTL_GET_FREE returns a free device number (adding a device if none is free); another
  process may bind it before we do, and then LOOP_CONFIGURE fails with EBUSY: ask again.
- LOOP_CONFIGURE (Linux 5.8+) binds file, flags and name in one call; older kernels answer
  EINVAL or ENOTTY and get LOOP_SET_FD + LOOP_SET_STATUS64 instead.
- LOOP_CLR_FD does not free a device that someone else still has open (udev probing it after
  an umount, for instance): it sets autoclear and answers 0, and the device is released when
  the last opener closes. So "detached" is only true once sysfs says so; callers wait.
- ENXIO from LOOP_CLR_FD or LOOP_GET_STATUS64 means the device is not bound (already free).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from typing import Protocol

from dockvols_common.loop_table import DELETED, backing_file
from dockvols_common.mountinfo import read_mountinfo

from .commands import CommandRunner
from .errors import BackendError, VolumeInUse

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_NAME_SIZE = 64

# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64);
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32); lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32]; lo_init[2] (u64). 232 bytes, no padding.
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: fd, block_size (u32); loop_info64; __reserved[8] (u64). 304 bytes.
_CONFIG = struct.Struct(f"=2I{_INFO64.size}s64x")
_INFO_FLAGS = 8  # index of lo_flags in the unpacked loop_info64

CONTROL = "/dev/loop-control"
GET_FREE_TRIES = 16  # each EBUSY means another process bound "our" free device first
BUSY_WAIT = 3.0  # seconds a claim on an unmounted device may linger before detach refuses
NODE_WAIT = 2.0  # seconds for devtmpfs/udev to create /dev/loopN of a device just added


class LoopDevices(Protocol):
    """Binding files to loop devices; every method raises BackendError naming the device."""

    def attach(self, path: str, read_only: bool) -> str:
        """Bind ``path`` to a free loop device; return the device path (/dev/loopN)."""

    def detach(self, device: str, path: str) -> None:
        """Ask the kernel to release ``device`` if it still holds ``path``; not bound (or
        bound to another file) is fine. VolumeInUse, with nothing changed, while a
        filesystem on it is mounted. Release may finish later (see module doc).
        ``<path> (deleted)``, as sysfs shows it, means the deleted file of that name."""

    def set_capacity(self, device: str) -> None:
        """Make a bound device take its backing file's current size."""


def _info64(path: str, read_only: bool) -> bytes:
    name = os.fsencode(path)[:LO_NAME_SIZE - 1]
    return _INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_READ_ONLY if read_only else 0,
                        name, b"", b"", 0, 0)


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise BackendError(f"cannot open {path}: {exc.strerror} (errno {exc.errno})") from exc


class KernelLoopDevices:
    """The real thing: ioctls on /dev/loop-control and /dev/loopN."""

    def __init__(self, control: str = CONTROL, dev: str = "/dev",
                 sysfs_block: str = "/sys/block", busy_wait: float = BUSY_WAIT) -> None:
        self.busy_wait = busy_wait
        self._control = control
        self._dev = dev
        self._sysfs_block = sysfs_block

    def attach(self, path: str, read_only: bool) -> str:
        backing = _open(path, os.O_RDONLY if read_only else os.O_RDWR)
        try:
            for _ in range(GET_FREE_TRIES):
                device = self._free_device()
                if self._bind(device, backing, path, read_only):
                    return device
            raise BackendError(f"no free loop device for {path}: {GET_FREE_TRIES} free "
                               "devices were taken by other processes before we could bind "
                               "them; is something else creating loop devices in a loop?")
        finally:
            os.close(backing)  # the loop device holds its own reference to the file

    def _free_device(self) -> str:
        control = _open(self._control, os.O_RDWR)
        try:
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
        except OSError as exc:
            raise BackendError(f"{self._control}: no free loop device ({exc.strerror}, errno "
                               f"{exc.errno}); raise max_loop or detach unused devices"
                               ) from exc
        finally:
            os.close(control)
        return os.path.join(self._dev, f"loop{number}")

    def _open_node(self, device: str, flags: int) -> int:
        # A device GET_FREE just added gets its node from devtmpfs at once, or from udev a
        # little later: wait for it, briefly.
        deadline = time.monotonic() + NODE_WAIT
        while True:
            try:
                return os.open(device, flags | os.O_CLOEXEC)
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise BackendError(f"loop device node {device} did not appear within "
                                       f"{NODE_WAIT:.0f}s; is devtmpfs mounted on /dev?"
                                       ) from None
                time.sleep(0.005)
            except OSError as exc:
                raise BackendError(f"cannot open {device}: {exc.strerror} (errno "
                                   f"{exc.errno})") from exc

    def _bind(self, device: str, backing: int, path: str, read_only: bool) -> bool:
        """Bind; False when another process bound this device first (try another)."""
        fd = self._open_node(device, os.O_RDONLY if read_only else os.O_RDWR)
        try:
            info = _info64(path, read_only)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, _CONFIG.pack(backing, 0, info))
                return True
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return False
                if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise _failed("binding", path, device, exc) from exc
            # A kernel older than 5.8: the two-step bind. Between the two calls the device
            # is bound with an empty name, which nothing of ours reads.
            try:
                fcntl.ioctl(fd, LOOP_SET_FD, backing)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return False
                raise _failed("binding", path, device, exc) from exc
            try:
                fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
            except OSError as exc:
                _clear_quietly(fd)
                raise _failed("configuring", path, device, exc) from exc
            return True
        finally:
            os.close(fd)

    def detach(self, device: str, path: str) -> None:
        fd = self._claim(device, path)
        if fd is None:
            return  # no such device: nothing bound there
        try:
            # Holding the device open pins its binding (a concurrent clear only sets
            # autoclear), so this check and the clear below are about the same file.
            if path.endswith(DELETED):  # no inode to compare: what sysfs says, while pinned
                if backing_file(device, self._sysfs_block) != path:
                    return
            elif not _bound_to(fd, path):
                return
            try:
                fcntl.ioctl(fd, LOOP_CLR_FD)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return  # released by someone else meanwhile
                # EBUSY: kernels before 5.x refuse a device still open elsewhere
                raise _failed("detaching", path, device, exc) from exc
        finally:
            os.close(fd)  # the last close is what really releases it on current kernels


    def _claim(self, device: str, path: str) -> int | None:
        """Open ``device`` O_EXCL, waiting out a brief claim; None if there is no device.

        O_EXCL claims the block device: EBUSY while a filesystem on it is mounted (in any
        mount namespace) or mkfs/e2fsck hold it. LOOP_CLR_FD would then only arm autoclear,
        and the caller wait in vain for the release; and while we hold the claim nobody can
        mount it between this check and the clear. Right after an umount the claim often
        lingers for a moment while containers start and stop (probably a mount namespace
        being set up or torn down: at the EBUSY no process's mountinfo showed the device and
        none had it open; gone within 0.1 s on an idle host, longer under load). So EBUSY
        with no mount in this namespace is waited out, up to BUSY_WAIT; a mount here is
        refused at once."""
        deadline = time.monotonic() + self.busy_wait
        pause = 0.002
        while True:
            try:
                return os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise BackendError(f"cannot open {device} to detach it: {exc.strerror} "
                                       f"(errno {exc.errno})") from exc
                mounted = _mounted_here(device)
                if mounted or time.monotonic() > deadline:
                    where = f" on {mounted}" if mounted else " or held exclusively"
                    raise VolumeInUse(f"loop device {device} of {path} is mounted{where} on "
                                      "this host; unmount it first (nothing was detached)"
                                      ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def set_capacity(self, device: str) -> None:
        fd = _open(device, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, LOOP_SET_CAPACITY)
        except OSError as exc:
            raise BackendError(f"refreshing the capacity of {device} failed: {exc.strerror} "
                               f"(errno {exc.errno})") from exc
        finally:
            os.close(fd)


def _mounted_here(device: str) -> str | None:
    """Where ``device`` is mounted in this mount namespace, if anywhere."""
    try:
        real = os.path.realpath(device)
        return next((m.point for m in read_mountinfo()
                     if m.source in (device, real)), None)
    except OSError:
        return None


def _bound_to(fd: int, path: str) -> bool:
    """Whether the open loop device ``fd`` is bound to the file ``path`` (same inode)."""
    try:
        raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_INFO64.size))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False  # not bound
        raise BackendError(f"reading loop status failed: {exc.strerror} (errno {exc.errno})"
                           ) from exc
    info = _INFO64.unpack(raw)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return bool(info[1] == st.st_ino and info[0] == _kernel_dev(st.st_dev))


def _kernel_dev(dev: int) -> int:
    """st_dev as the kernel encodes lo_device (new_encode_dev), not as glibc does."""
    major, minor = os.major(dev), os.minor(dev)
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def _clear_quietly(fd: int) -> None:
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError:
        pass


def _failed(what: str, path: str, device: str, exc: OSError) -> BackendError:
    return BackendError(f"{what} loop device {device} for {path} failed: {exc.strerror} "
                        f"(errno {exc.errno})")


class LosetupLoopDevices:
    """The same through `losetup` behind a CommandRunner: what tests fake without root."""

    def __init__(self, run: CommandRunner) -> None:
        self._run = run

    def attach(self, path: str, read_only: bool) -> str:
        argv = ["losetup", "--find", "--show"] + (["--read-only"] if read_only else []) + [path]
        return self._run(argv).strip()

    def detach(self, device: str, path: str) -> None:
        self._run(["losetup", "--detach", device])

    def set_capacity(self, device: str) -> None:
        self._run(["losetup", "--set-capacity", device])
