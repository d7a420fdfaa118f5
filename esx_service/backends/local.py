"""The embedded backend: datastores are directories, disks are flat VMDKs, attach is a loop
device on the extent. It lets one Linux host with Docker run the whole system."""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import time

from dockvols_common.atomic import atomic_write_bytes, atomic_write_json
from dockvols_common.faults import fault_point
from dockvols_common.loop_table import (
    DELETED,
    PARTITIONS,
    SYSFS_BLOCK,
    bound_file,
    loop_table,
)

from ..commands import CommandRunner, run_command
from ..errors import (
    BackendError,
    BadRequest,
    DiskExists,
    InsufficientSpace,
    InvalidOption,
    UnknownDatastore,
    VolumeInUse,
)
from ..file_cache import ParsedFiles
from ..file_names import name_of_stem
from ..lease_store import park_file, unpark_file
from ..loopdev import KernelLoopDevices, LoopDevices, LosetupLoopDevices
from ..metadata import CREATING
from ..options import MB
from ..telemetry import report_progress
from ..vmdk import (
    DESCRIPTOR_LIMIT,
    FLAT_EXTENTS,
    build_descriptor,
    describe_vmdk,
    new_disk_uuid,
    parse_descriptor,
    resize_descriptor,
    with_extent_and_uuid,
)
from .base import (
    DatastoreInfo,
    DiskLocation,
    Fence,
    FileTimes,
    RecordWrite,
    StoragePolicyService,
    attach_then_record,
    detach_then_record,
)
from .trash import Trash

log = logging.getLogger("dockvols.local")
DETACH_WAIT = 5.0  # seconds
_CHUNK = 4 * MB
_ZEROS = bytes(_CHUNK)


class LocalBackend:
    name = "local"
    storage_policies: StoragePolicyService | None = None  # no VSAN here

    def __init__(self, datastores: dict[str, str], run: CommandRunner = run_command,
                 sysfs_block: str | None = "/sys/block",
                 loops: LoopDevices | None = None) -> None:
        self._paths = dict(datastores)
        self._run = run
        # Loop devices are bound and released with ioctls (esx_service/loopdev.py), not a
        # losetup process per call; a runner of one's own (tests) plays losetup instead.
        self._loops = loops or (KernelLoopDevices() if run is run_command
                                else LosetupLoopDevices(run))
        # Which loop device holds which file is read from sysfs: a `losetup --list` per
        # check costs a process, and recovery checks every volume. A runner of one's own
        # (tests) answers the listing too.
        self._sysfs_block = sysfs_block if run is run_command else None
        # The kernel's own sysfs: /proc/partitions says which loop devices are bound
        self._partitions = PARTITIONS if self._sysfs_block == SYSFS_BLOCK else None
        # Listings reuse each metadata file's parsed form while a stat proves the file
        # unchanged (esx_service/file_cache.py); reads under a volume's lock never do.
        self._listed: ParsedFiles[dict | None] = ParsedFiles(_parse_json)
        # The extent each descriptor names, for reports only (a volume's allocation in every
        # Get's view): reused while a stat proves the descriptor unchanged, which costs a
        # stat instead of an open, a read and a parse (issue 15). Operations on the disk
        # read the descriptor itself.
        self._extents: ParsedFiles[str] = ParsedFiles(_parse_extent)
        for path in self._paths.values():
            os.makedirs(os.path.join(path, "dockvols"), exist_ok=True)
        # A removed disk's blocks are freed by a thread, not inside the Remove (trash.py).
        self._trash = Trash(self._paths)
        self._trash.sweep()

    def close(self) -> None:
        # Holds no connection: loop devices and files outlive the service by design. What
        # the trash has not freed yet, the next start does.
        self._trash.close()

    # -- datastores -------------------------------------------------------------------
    def datastores(self) -> list[DatastoreInfo]:
        result = []
        for name, path in self._paths.items():
            st = os.statvfs(path)
            result.append(DatastoreInfo(
                name=name, type="local", capacity_bytes=st.f_blocks * st.f_frsize,
                free_bytes=st.f_bavail * st.f_frsize + self._trash.pending(name),
                url=f"file://{path}",
            ))
        return result

    def default_datastore(self, vm: str) -> str | None:
        return None

    def _path(self, loc: DiskLocation, relative: str) -> str:
        root = self._paths.get(loc.datastore)
        if root is None:
            raise UnknownDatastore(f"unknown datastore {loc.datastore!r}")
        return os.path.join(root, relative)

    # -- metadata ---------------------------------------------------------------------
    def list_metadata(self, datastore: str) -> list[dict]:
        root = os.path.join(self._paths[datastore], "dockvols")
        found = []
        for group in _listdir(root):
            folder = os.path.join(root, group)
            # vDVS's _DEFAULT links to its UUID folder (list those files once), and its
            # config DB may sit beside the folders; dockvols' own (the trash) are hidden
            if group.startswith(".") or os.path.islink(folder) or not os.path.isdir(folder):
                continue
            entries = [e for e in _listdir(folder) if e.endswith(".json")
                       and not e.startswith(".")]
            self._listed.forget_missing(folder, set(entries))
            for entry in entries:
                try:
                    data = self._listed.get(folder, entry)
                except FileNotFoundError:
                    continue  # removed since the listing
                except (OSError, ValueError) as exc:  # one bad file must not hide the others
                    log.warning("skipping unreadable metadata %s: %s",
                                os.path.join(folder, entry), exc)
                    continue
                if data is _LOST:
                    stem = entry.removesuffix(".json")
                    name = name_of_stem(stem)
                    if not _cut_short(folder, stem):
                        log.warning("skipping %s: %s", os.path.join(folder, entry),
                                    _EMPTIED)
                        continue
                    if name is None:  # a hashed stem: its next create cleans it up
                        log.warning("skipping %s: a create a crash cut short, of a volume "
                                    "whose name its file name does not hold",
                                    os.path.join(folder, entry))
                        continue
                    data = _cut_create(datastore, group, name)
                if data is not None:
                    found.append(data)
        return found

    def read_metadata(self, loc: DiskLocation) -> dict | None:
        path = self._path(loc, loc.metadata_path)
        try:
            with open(path, "rb") as f:
                data = _parse_json(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"unreadable metadata {path}: {exc}") from exc
        if data is _LOST:
            if not _cut_short(os.path.dirname(path), loc.stem):
                raise BackendError(f"unreadable metadata {path}: {_EMPTIED}")
            return _cut_create(loc.datastore, loc.vmgroup, loc.name)
        return data

    def write_metadata(self, loc: DiskLocation, data: dict, fence: Fence | None = None,
                       attachment: bool = False, before_disk: bool = False) -> None:
        path = self._path(loc, loc.metadata_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # An attachment record is written whole (the file's fsync) but its rename is not
        # made durable (no fsync of the folder: 0.75 ms of a 1.7 ms write here). Only a
        # host crash can lose the rename, and a loop device does not outlive one: after it,
        # the record left (the one before, complete) says attached to a device that is gone
        # or detached, and recovery's check against the kernel's loop table makes it
        # detached either way. A lost `formatted` flip only brings back the probe before
        # mkfs and one writable attach of a read-only volume, as before its first detach.
        # The `creating` record is not fsynced at all (issue 15: one fsync less per
        # create). Its name is: ext4 and XFS journal names in the order they were made, so
        # the create's next fsync (the extent's where it holds data, else the `detached`
        # record's) makes it durable too, and a crash cannot keep the disk's names without
        # it. Its content may be lost (an empty file: a new file's size is committed only
        # with its data), and nothing in it is needed after a crash: the record replaces
        # no other, and all recovery does with a `creating` record is delete the volume's
        # files, which its location names. So an empty record reads as a `creating` one
        # where its descriptor, written after it, is missing or empty too (_cut_short,
        # _cut_create). Every other record is fsynced before the create answers.
        sync_dir = not (attachment or before_disk)
        if fence is None:
            atomic_write_json(path, data, durable=not before_disk, sync_dir=sync_dir)
            return
        # Staged in the lease's folder: once the lease is taken over that folder is gone
        # under its name, so the open or the rename fails and the write never lands.
        try:
            atomic_write_json(path, data, tmp_dir=self._path(loc, fence.staging),
                              durable=not before_disk, sync_dir=sync_dir)
        except FileNotFoundError as exc:
            raise fence.lost_error() from exc

    def delete_metadata(self, loc: DiskLocation, fence: Fence | None = None) -> None:
        path = self._path(loc, loc.metadata_path)
        if fence is None:
            _unlink(path)
            return
        staging = self._path(loc, fence.staging)
        gone = os.path.join(staging, ".deleted.json")
        try:  # moved into the staging folder first: fails once the lease is taken over
            os.rename(path, gone)
        except FileNotFoundError as exc:
            if not os.path.isdir(staging):
                raise fence.lost_error() from exc
            return  # already gone
        _unlink(gone)

    def park_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        # Durable before the disk goes, so a remove that answered never comes back: one
        # fsync, where the `removing` record it replaces took two.
        park_file(self._path(loc, loc.metadata_path), self._path(loc, fence.staging), name,
                  f"the metadata of {loc.name}@{loc.datastore}", fence.lost_error)

    def unpark_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        unpark_file(self._path(loc, loc.metadata_path), self._path(loc, fence.staging), name,
                    f"the metadata of {loc.name}@{loc.datastore}")

    # -- disks ------------------------------------------------------------------------
    def _extent_name(self, loc: DiskLocation) -> str:
        return f"{loc.stem}-flat.vmdk"

    def _extent_path(self, loc: DiskLocation) -> str:
        descriptor = self._path(loc, loc.descriptor_path)
        try:
            with open(descriptor, "rb") as f:
                extent = _parse_extent(f.read()) or self._extent_name(loc)
        except FileNotFoundError:
            extent = self._extent_name(loc)
        except ValueError as exc:
            raise BackendError(f"corrupt descriptor {descriptor}: {exc}") from exc
        return _beside(descriptor, extent)

    def _rebuilt_descriptor(self, loc: DiskLocation, extent: str) -> str:
        """The descriptor a host crash emptied (a create writes it without fsync), made
        again from what it held: the extent's name and size, and the format and UUID the
        volume's record keeps. Only under the volume's lease: a reader that found it
        empty uses the extent's name and writes nothing (a remove may be under way)."""
        record = self.read_metadata(loc) or {}
        options = record.get("options") or {}
        log.warning("volume %s@%s: its disk descriptor was lost in a crash; rebuilt from "
                    "the extent and the volume's record", loc.name, loc.datastore)
        return build_descriptor(os.path.basename(extent), os.stat(extent).st_size,
                                options.get("diskformat", "thin") == "thin",
                                str(record.get("disk_uuid") or "") or new_disk_uuid())

    def create_disk(self, loc: DiskLocation, size_mb: int, diskformat: str,
                    storage_policy: str | None) -> str:
        if storage_policy:
            raise InvalidOption(f"vsan-policy-name {storage_policy!r} needs the vsphere backend; "
                                "the local backend has no storage policies")
        return self._write_disk(loc, size_mb * MB, diskformat, source=None)

    def clone_disk(self, src: DiskLocation, dst: DiskLocation, diskformat: str) -> str:
        source = self._extent_path(src)
        return self._write_disk(dst, os.stat(source).st_size, diskformat, source=source)

    def _write_disk(self, loc: DiskLocation, size: int, diskformat: str,
                    source: str | None) -> str:
        descriptor = self._path(loc, loc.descriptor_path)
        os.makedirs(os.path.dirname(descriptor), exist_ok=True)
        extent = os.path.join(os.path.dirname(descriptor), self._extent_name(loc))
        disk_uuid = new_disk_uuid()
        try:
            fd = os.open(extent, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise DiskExists(f"disk file {extent} already exists") from exc
        try:
            try:
                if diskformat != "thin":
                    os.posix_fallocate(fd, 0, size)
                if diskformat == "eagerzeroedthick" and source is None:
                    _write_zeros(fd, size)
                if source is not None:
                    _copy_extent(source, fd, sparse=diskformat == "thin")
                os.ftruncate(fd, size)
                # Written data is made durable here. A thin or lazily zeroed extent has
                # none, only its inode and allocation, which the `detached` record's fsync
                # commits with it (the journal is one, in order: ext4, XFS).
                if source is not None or diskformat == "eagerzeroedthick":
                    os.fsync(fd)
            finally:
                os.close(fd)
            # Neither the descriptor nor its folder is fsynced (issue 15: two fsyncs less
            # per create). The volume layer's next step is the `detached` record in this
            # folder, whose fsyncs make the extent's and the descriptor's names durable
            # with it before the create answers; a crash before that leaves the durable
            # `creating` record, and recovery deletes whatever of the disk exists. Its
            # content alone may be lost (empty: ext4 and XFS commit a new file's size with
            # its data), and everything in it is kept elsewhere too: the extent's name is
            # the default one, its size the extent's, thin or thick and the UUID are in
            # the volume's record. So an empty descriptor reads as the default extent, and
            # a grow writes it again whole (lost_content, _rebuilt_descriptor).
            atomic_write_bytes(descriptor, build_descriptor(
                os.path.basename(extent), size, diskformat == "thin", disk_uuid).encode(),
                durable=False)
        except OSError as exc:
            _unlink(extent)
            _unlink(descriptor)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientSpace(
                    f"datastore {loc.datastore} ran out of space creating {loc.name}") from exc
            raise BackendError(f"creating disk {descriptor} failed: {exc}") from exc
        return disk_uuid

    def grow_disk(self, loc: DiskLocation, size_mb: int, attach_info: dict | None) -> None:
        # Extent first, then the descriptor, then the loop device: each step only ever makes
        # its part bigger, and a crash between them is finished by running this again.
        descriptor = self._path(loc, loc.descriptor_path)
        size = size_mb * MB
        try:
            with open(descriptor, encoding="utf-8") as f:
                text = f.read()
            rebuilt = lost_content(text.encode())
            if rebuilt:  # written below with the new size, crash-safe
                text = self._rebuilt_descriptor(
                    loc, _beside(descriptor, self._extent_name(loc)))
            found = parse_descriptor(text)
            extent = _beside(descriptor, found.extent_file)
            fd = os.open(extent, os.O_WRONLY)
            try:
                current = os.fstat(fd).st_size
                if current < size:
                    if not found.thin:  # thick disks own their space, grown part included
                        os.posix_fallocate(fd, current, size - current)
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            finally:
                os.close(fd)
            if found.size_bytes < size or rebuilt:
                atomic_write_bytes(descriptor, resize_descriptor(text, size).encode())
        except FileNotFoundError as exc:
            raise BackendError(f"cannot grow {loc.name}@{loc.datastore}: {exc.filename} "
                               "is missing") from exc
        except ValueError as exc:
            raise BackendError(f"corrupt descriptor {descriptor}: {exc}") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientSpace(f"datastore {loc.datastore} ran out of space growing "
                                        f"{loc.name} to {size_mb}mb") from exc
            raise BackendError(f"growing disk {descriptor} failed: {exc}") from exc
        fault_point("resize.extent_grown")  # grown on disk; the loop device not told yet
        for device in self._loop_devices_of(extent):
            self._loops.set_capacity(device)  # LOOP_SET_CAPACITY

    def delete_disk(self, loc: DiskLocation) -> None:
        self._trash.discard(loc.datastore, self._extent_path(loc))
        descriptor = self._path(loc, loc.descriptor_path)
        _unlink(descriptor)
        self._extents.forget(*os.path.split(descriptor))

    def disk_blank(self, loc: DiskLocation) -> bool | None:
        # A thin extent with a block allocated holds data (mkfs wrote there, and a host
        # crash keeps what the guest made durable); one with none is all holes. A thick
        # one has its blocks from the start, so only its record can tell.
        descriptor = self._path(loc, loc.descriptor_path)
        try:
            with open(descriptor, encoding="utf-8") as f:
                found = parse_descriptor(f.read())
            if not found.thin:
                return None
            return os.stat(_beside(descriptor, found.extent_file)).st_blocks == 0
        except (OSError, ValueError):
            return None  # the attach itself reports what is wrong with the disk

    def file_times(self, loc: DiskLocation) -> FileTimes:
        return FileTimes(_modified(self._path(loc, loc.descriptor_path)),
                         _modified(self._path(loc, loc.metadata_path)))

    def disk_allocated_bytes(self, loc: DiskLocation) -> int:
        descriptor = self._path(loc, loc.descriptor_path)
        folder, name = os.path.split(descriptor)
        try:
            extent = self._extents.get(folder, name) or self._extent_name(loc)
        except FileNotFoundError:
            extent = self._extent_name(loc)
        except (ValueError, OSError) as exc:
            raise BackendError(f"corrupt descriptor {descriptor}: {exc}") from exc
        try:
            return os.stat(_beside(descriptor, extent)).st_blocks * 512
        except FileNotFoundError:
            return 0

    # -- adopting disks made elsewhere ------------------------------------------------
    def _ds_file(self, datastore: str, path: str) -> str:
        root = self._paths.get(datastore)
        if root is None:
            raise UnknownDatastore(f"unknown datastore {datastore!r}")
        full = os.path.normpath(os.path.join(root, path.lstrip("/")))
        if not full.startswith(os.path.normpath(root) + os.sep):
            raise BadRequest(f"path {path!r} leaves datastore {datastore}")
        return full

    def read_file(self, datastore: str, path: str, limit: int | None = None) -> bytes | None:
        try:
            with open(self._ds_file(datastore, path), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise BackendError(f"reading [{datastore}] {path} failed: {exc}") from exc

    def find_files(self, datastore: str, folder: str, pattern: str) -> list[str]:
        root = self._paths.get(datastore)
        if root is None:
            raise UnknownDatastore(f"unknown datastore {datastore!r}")
        found = []
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in fnmatch.filter(files, pattern):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
        return sorted(found)

    def _flat_extent(self, datastore: str, path: str) -> tuple[str, str]:
        """(descriptor text, extent path) of a flat disk: what a loop device can attach."""
        head = self.read_file(datastore, path, 64 * 1024)
        if head is None:
            raise BackendError(f"disk [{datastore}] {path} does not exist")
        facts = describe_vmdk(head)
        if len(facts.extents) != 1 or facts.extents[0][0] not in FLAT_EXTENTS:
            raise BackendError(f"disk [{datastore}] {path} has extents {facts.extents}; the "
                               "local backend attaches one flat extent (VMFS or FLAT)")
        folder = os.path.dirname(self._ds_file(datastore, path))
        return head.decode("utf-8", "replace"), os.path.join(folder, facts.extents[0][1])

    def disk_users(self, datastore: str, path: str) -> list[str]:
        _, extent = self._flat_extent(datastore, path)
        return [f"this host (loop device {dev}, running)"
                for dev in self._loop_devices_of(extent)]

    def move_disk(self, datastore: str, src: str, dst: str) -> str:
        text, extent = self._flat_extent(datastore, src)
        facts = describe_vmdk(text.encode())
        source, target = self._ds_file(datastore, src), self._ds_file(datastore, dst)
        new_extent = target[:-len(".vmdk")] + "-flat.vmdk"
        disk_uuid = facts.uuid or new_disk_uuid()
        if os.path.realpath(source) != os.path.realpath(target):  # not already in place
            for path in (target, new_extent):
                if os.path.lexists(path):
                    raise BackendError(f"cannot move [{datastore}] {src} to {dst}: "
                                       f"{os.path.basename(path)} already exists there")
        moved = False
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.realpath(extent) != os.path.realpath(new_extent):
                os.rename(extent, new_extent)  # one datastore: a rename, nothing copied
                moved = True
            atomic_write_bytes(target, with_extent_and_uuid(
                text, os.path.basename(new_extent), disk_uuid).encode())
            if os.path.realpath(source) != os.path.realpath(target):
                os.unlink(source)
        except OSError as exc:
            if moved and not os.path.exists(target):
                os.rename(new_extent, extent)  # the source descriptor still names it
            raise BackendError(f"moving disk [{datastore}] {src} to {dst} failed: "
                               f"{exc}") from exc
        return disk_uuid

    # -- attach -----------------------------------------------------------------------
    def _loop_table(self, only: str | None = None) -> list[tuple[str, str]]:
        """(device, backing file) of every bound loop device, the backing file as a real
        path (symbolic links resolved), with `` (deleted)`` after a deleted one's; with
        ``only``, of that device alone (its one sysfs file, not a scan; issue 15)."""
        if self._sysfs_block is None:
            out = self._run(["losetup", "--noheadings", "--output", "NAME,BACK-FILE", "--list"])
            return [(p[0], _real(p[1].strip())) for p in (line.split(None, 1)
                                                          for line in out.splitlines())
                    if len(p) == 2 and (only is None or p[0] == only)]
        try:
            if only is not None:
                backing = bound_file(only, self._sysfs_block)
                return [] if backing is None else [(only, backing)]
            # The kernel names a backing file by its path as it resolved it (d_path): already
            # real, so no realpath per device and scan (1.6 ms per scan of 14 devices here).
            return loop_table(self._sysfs_block, partitions=self._partitions)
        except OSError as exc:
            raise BackendError(f"cannot read {exc.filename}: {exc}") from exc

    def _loop_devices_of(self, extent: str) -> list[str]:
        real = os.path.realpath(extent)
        return [dev for dev, backing in self._loop_table() if backing == real]

    def _loops_on(self, extent: str, deleted: bool = False,
                  only: str | None = None) -> list[tuple[str, str]]:
        """(device, backing) on the extent; with ``deleted``, also those on a deleted file
        that had this path (the kernel shows it as ``<path> (deleted)``); with ``only``,
        that device if it is one of them."""
        real = os.path.realpath(extent)
        return [(dev, backing) for dev, backing in self._loop_table(only)
                if backing == real or (deleted and backing == real + DELETED)]

    def attach_disk(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                    disk_uuid: str | None = None) -> dict:
        extent = self._extent_path(loc)
        if not os.path.exists(extent):
            raise BackendError(f"disk extent {extent} is missing")
        # The volume layer attaches only a volume its metadata says is detached, under the
        # volume's lease: a loop device already on the extent is what an attach interrupted
        # before its metadata (a host killed mid-attach) left; nobody was told of it.
        leftovers = self._loops_on(extent)
        if leftovers:
            log.warning("detaching %s left on %s@%s by an interrupted attach",
                        ", ".join(d for d, _ in leftovers), loc.name, loc.datastore)
            self._detach_devices(leftovers, f"{loc.name}@{loc.datastore}")
        return {"kind": "loop", "device": self._loops.attach(extent, read_only)}

    def attach_recorded(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                        disk_uuid: str | None, record: RecordWrite) -> dict:
        return attach_then_record(self, loc, vm, read_only, attach_as, disk_uuid, record)

    def detach_recorded(self, loc: DiskLocation, vm: str, attach_info: dict | None,
                        record: RecordWrite) -> None:
        detach_then_record(self, loc, vm, attach_info, record)

    def detach_disk(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> None:
        # The device this attach made, when known: another VM's device on the same extent
        # (only ever there if exclusion failed) is not ours to pull. Devices on a deleted
        # extent of this name are released too: nothing else can ever reach them.
        only = (attach_info or {}).get("device") or None
        self._detach_devices(self._loops_on(self._extent_path(loc), deleted=True, only=only),
                             f"{loc.name}@{loc.datastore}")

    def _detach_devices(self, pairs: list[tuple[str, str]], what: str) -> None:
        """Detach (device, backing file) pairs and wait until the kernel let them go (a
        device freed and at once bound to another file is someone else's)."""
        for device, backing in pairs:
            try:
                self._loops.detach(device, backing)
            except VolumeInUse as exc:  # mounted: refused at once, nothing changed
                raise VolumeInUse(f"cannot detach {what}: {exc.message}") from exc
        # The kernel lets a loop device go only when its last opener (udev probing after an
        # umount, a mount someone forgot) closes it: detached means gone, so wait, bounded.
        deadline = time.monotonic() + DETACH_WAIT
        pause = 0.001
        bound = set(pairs)
        while bound and (bound := self._still_bound(bound)):
            if time.monotonic() > deadline:
                raise BackendError(f"loop device {', '.join(sorted(d for d, _ in bound))} of "
                                   f"{what} is still in use {DETACH_WAIT:.0f}s after detach; "
                                   "is it mounted somewhere?")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)  # usually released within a millisecond or two

    def _still_bound(self, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (device, backing file) pairs the kernel still has bound."""
        if self._sysfs_block is None:
            return pairs & set(self._loop_table())
        # Only these devices' sysfs files, not a scan of every loop device's (issue 15)
        try:
            return {(dev, backing) for dev, backing in pairs
                    if bound_file(dev, self._sysfs_block) == backing}
        except OSError as exc:
            raise BackendError(f"cannot read {exc.filename}: {exc}") from exc

    def is_attached(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> bool:
        devices = self._loop_devices_of(self._extent_path(loc))
        if attach_info is None:
            return bool(devices)
        return attach_info.get("device") in devices

    def vm_powered_on(self, vm: str) -> bool:
        # Local "VMs" are identities on this running host: always treat them as running.
        return True

    def release_orphans(self, datastore: str) -> int:
        """Detach loop devices whose extent under this datastore was deleted (a volume
        removed while attached, by an older version or by hand): nothing can reach them
        through the API any more, and they pin the deleted file's space."""
        root = os.path.realpath(self._paths[datastore]) + os.sep
        orphans = [(dev, backing) for dev, backing in self._loop_table()
                   if backing.endswith(DELETED)
                   and os.path.realpath(backing.removesuffix(DELETED)).startswith(root)]
        if orphans:
            log.warning("detaching loop devices of deleted disk files on %s: %s", datastore,
                        ", ".join(f"{dev} ({backing})" for dev, backing in orphans))
            self._detach_devices(orphans, f"deleted disks on {datastore}")
        return len(orphans)


def _real(listed: str) -> str:
    """A listed backing file as a real path; `` (deleted)`` (an unlinked file, never the
    extent of that name now) stays at the end."""
    if listed.endswith(DELETED):
        return os.path.realpath(listed.removesuffix(DELETED)) + DELETED
    return os.path.realpath(listed)


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _parse_extent(raw: bytes) -> str:
    """The extent a descriptor names; "" for one a host crash emptied (the default)."""
    if lost_content(raw):
        return ""
    return parse_descriptor(raw.decode("utf-8")).extent_file


def lost_content(raw: bytes) -> bool:
    """Whether a file's bytes are what a host crash leaves of a new file written without
    fsync: nothing, or zeros (ext4 and XFS commit a file's size only with its data, so a
    crash never leaves half of a one-page file). Anything else is the file's own."""
    return not raw.strip(b"\0")


# A record whose content a host crash lost (lost_content): only a `creating` record, the
# one write that is not fsynced, can be (write_metadata).
_LOST: dict = {}
_EMPTIED = ("it is empty, but the volume's disk descriptor is whole, so it is not what a "
            "crash leaves of a create (that empties both); restore the record from a backup, "
            "or move the volume's files away by hand")


def _parse_json(raw: bytes) -> dict | None:
    if lost_content(raw):
        return _LOST
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


def _cut_short(folder: str, stem: str) -> bool:
    """Whether an emptied record is what a crash leaves of a create: the descriptor, written
    after the record and unsynced like it, is missing or emptied too (writeback flushes the
    older dirty file first). A record emptied beside a whole descriptor is something else
    (a hand, a restore), and such a volume's files are never taken for a cut create's."""
    try:
        with open(os.path.join(folder, f"{stem}.vmdk"), "rb") as f:
            return lost_content(f.read(DESCRIPTOR_LIMIT))
    except FileNotFoundError:
        return True


def _cut_create(datastore: str, vmgroup: str, name: str) -> dict:
    """What an emptied record stands for: a create a crash cut short, which recovery (or
    the next create of the name) undoes. Its options are the defaults: they are lost."""
    return {"name": name, "datastore": datastore, "vmgroup": vmgroup, "status": CREATING,
            "options": {}, "created_by": "(a create cut short by a crash)"}


def _beside(descriptor: str, extent_file: str) -> str:
    """The extent a descriptor names: in the descriptor's own folder, whatever path the
    descriptor gives (a descriptor names its extent relative to itself)."""
    return os.path.join(os.path.dirname(descriptor), os.path.basename(extent_file))


def _modified(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except FileNotFoundError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_zeros(fd: int, size: int) -> None:
    written = 0
    while written < size:
        written += os.pwrite(fd, _ZEROS[: min(_CHUNK, size - written)], written)
        report_progress(written, size, "bytes")


def _copy_extent(source: str, fd: int, sparse: bool) -> None:
    size = os.stat(source).st_size
    with open(source, "rb") as src:
        offset = 0
        while chunk := src.read(_CHUNK):
            if not (sparse and chunk.count(0) == len(chunk)):
                os.pwrite(fd, chunk, offset)
            offset += len(chunk)
            report_progress(offset, size, "bytes")
