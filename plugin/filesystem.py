"""mkfs, mount, umount, growing a mounted filesystem, and reading the mount table: the only
module that runs them.

mkfs and the filesystem growers are processes; mount and umount are system calls
(plugin/syscalls.py) and "which filesystem is on this disk?" reads the superblock
(plugin/superblock.py), with `blkid -p` only for a disk that is neither fresh nor ext/XFS.
"""

from __future__ import annotations

import os
import subprocess
from typing import Protocol

from dockvols_common.mountinfo import MOUNTINFO, mounts_under

from . import superblock, syscalls
from .errors import FilesystemError

# Lazy init and no discard: a fresh disk is all zeros, and discarding a sparse loop-backed
# extent only punches holes that are already there.
_MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-K"],
}


class Mounter(Protocol):
    def filesystem_of(self, device: str) -> str | None: ...
    def mkfs(self, device: str, fstype: str, label: str) -> None: ...
    def mount(self, device: str, target: str, fstype: str, read_only: bool) -> None: ...
    def umount(self, target: str) -> None: ...
    def grow(self, device: str, target: str, fstype: str) -> None: ...
    def grow_unmounted(self, device: str, fstype: str) -> None: ...
    def mounts_under(self, root: str) -> dict[str, str]: ...
    def is_mount_point(self, target: str) -> bool: ...


def _run(argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise FilesystemError(f"{argv[0]} is not installed in the plugin") from exc
    except subprocess.TimeoutExpired as exc:
        raise FilesystemError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from exc


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise FilesystemError(f"{what} failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()}")


def fs_label(name: str, limit: int) -> str:
    """A filesystem label from a volume name: labels are counted in bytes (mkfs.xfs refuses
    a longer one), and a volume name may hold letters of any script."""
    return name.encode("utf-8", "ignore")[:limit].decode("utf-8", "ignore")


class SystemMounter:
    def __init__(self, mountinfo: str = MOUNTINFO) -> None:
        self._mountinfo = mountinfo

    def filesystem_of(self, device: str) -> str | None:
        try:
            found = superblock.probe(device)
        except OSError as exc:
            raise FilesystemError(f"cannot read the superblock of {device}: {exc}") from exc
        if found != superblock.UNKNOWN:
            return found
        # -p probes the device itself (no cache); exit 2 means "no filesystem found".
        done = _run(["blkid", "-p", "-o", "value", "-s", "TYPE", device])
        if done.returncode == 2:
            return None
        _check(done, f"blkid {device}")
        return done.stdout.strip() or None

    def mkfs(self, device: str, fstype: str, label: str) -> None:
        if fstype not in _MKFS:
            raise FilesystemError(f"unsupported fstype {fstype!r}: allowed are "
                                  f"{', '.join(_MKFS)}")
        label_flag = ["-L", fs_label(label, 12 if fstype == "xfs" else 16)]
        _check(_run(_MKFS[fstype] + label_flag + [device]), f"mkfs.{fstype} on {device}")

    def mount(self, device: str, target: str, fstype: str, read_only: bool) -> None:
        os.makedirs(target, exist_ok=True)
        try:
            syscalls.mount(device, target, fstype, read_only)
        except OSError as exc:
            raise FilesystemError(str(exc)) from exc

    def umount(self, target: str) -> None:
        try:
            syscalls.umount(target)
        except OSError as exc:
            raise FilesystemError(str(exc)) from exc
        try:
            os.rmdir(target)
        except OSError:
            pass  # not empty or already gone: the mount point itself is harmless

    def grow(self, device: str, target: str, fstype: str) -> None:
        """Grow the mounted filesystem to fill its device, online; a no-op when it does."""
        if fstype == "ext4":
            done = _run(["resize2fs", device])
            if done.returncode != 0 and "Permission denied" in done.stderr:
                raise FilesystemError(
                    f"growing ext4 on {device} online needs CAP_SYS_RESOURCE, which the "
                    "plugin does not have (resize2fs: permission denied)")
            _check(done, f"growing the ext4 filesystem on {device}")
        elif fstype == "xfs":
            _check(_run(["xfs_growfs", "-d", target]), f"growing the xfs filesystem on {device}")
        else:
            raise FilesystemError(f"cannot grow a {fstype!r} filesystem: only ext4 and xfs")

    def grow_unmounted(self, device: str, fstype: str) -> None:
        """Grow an unmounted ext4 filesystem to fill its device (resize2fs wants a freshly
        checked filesystem: e2fsck -f -p first, which only fixes what is safe to fix)."""
        if fstype != "ext4":
            raise FilesystemError(f"a {fstype} filesystem grows only while mounted")
        checked = _run(["e2fsck", "-f", "-p", device])
        if checked.returncode not in (0, 1):  # 1: errors corrected
            said = (checked.stdout or checked.stderr).strip()
            raise FilesystemError(f"e2fsck -f -p {device} before growing it failed (exit "
                                  f"{checked.returncode}): {said}")
        _check(_run(["resize2fs", device]), f"growing the ext4 filesystem on {device}")

    def is_mount_point(self, target: str) -> bool:
        """Whether something is mounted at ``target``: two stats (a device of its own, or
        the root of one), not a read of the whole mount table (0.25 ms with 100 mounts
        here, on every Mount and Unmount; issue 15). A volume's mount point is a folder
        of the mount root on another filesystem, so the two answer alike for it."""
        return os.path.ismount(target)

    def mounts_under(self, root: str) -> dict[str, str]:
        """Mount point -> source device of every mount below ``root``."""
        return {m.point: m.source for m in mounts_under(root, self._mountinfo)}
