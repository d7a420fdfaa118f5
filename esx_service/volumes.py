"""Volume operations: the state machine every backend goes through.

Crash safety comes from ordering: metadata is written (status ``creating``) before the disk
and deleted (after status ``removing``) after it, so a crash leaves at worst metadata in a
transitional state, which ``recover()`` finishes on the next start. Only ``detached`` and
``attached`` volumes are ever shown.

Exclusion holds across hosts: ``self._locks`` (``esx_service.cluster_locks``) puts a lease on
the datastore behind each per-volume and per-(datastore, vmgroup) lock, and every metadata
write is fenced by the volume's lease, so a host that lost it cannot overwrite.
"""

from __future__ import annotations

import logging
import shlex
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import replace
from typing import TypeVar

from dockvols_common.faults import fault_point
from dockvols_common.sizes import rounded_size_text, size_text

from .access import DEFAULT_VMGROUP, AccessRules, OpenAccess
from .backends.base import Backend, DatastoreInfo, DiskLocation, Fence, RecordWrite
from .cluster_locks import MARK, LocalVolumeLocks, VolumeLocks
from .errors import (
    AccessDenied,
    BackendError,
    DiskExists,
    DockvolsError,
    InsufficientSpace,
    InvalidName,
    InvalidOption,
    LeaseLost,
    QuotaExceeded,
    UnknownDatastore,
    VolumeBusy,
    VolumeExists,
    VolumeInUse,
    VolumeNotFound,
)
from .file_names import name_of_stem
from .listing import Listed, ListingMemo
from .metadata import ATTACHED, CREATING, DETACHED, REMOVING, VolumeMeta, json_copy
from .names import VolumeRef, check_mountable, match_datastore, parse_volume_name
from .op_gate import OperationGate, OpObserver
from .options import MB, VolumeOptions, parse_options, parse_size_mb
from .vsphere.paths import ds_path

CREATE_MARK = f"{MARK}create-"  # a create's mark (VolumeLocks.mark(key, "create"))
log = logging.getLogger("dockvols.volumes")
METADATA = "metadata"  # its key in a lease's memo
T = TypeVar("T")


class VolumeService:
    def __init__(self, backend: Backend, default_datastore: str | None = None,
                 access: AccessRules | None = None,
                 observer: OpObserver | None = None, locks: VolumeLocks | None = None) -> None:
        self.backend = backend
        self._configured_default = default_datastore
        self.access = access or OpenAccess()
        # Without leases (one process owns the datastores): unit tests, benches.
        self._locks: VolumeLocks = locks or LocalVolumeLocks()
        self.gate = OperationGate(observer)
        self._listing = ListingMemo()
        self._two_lease_imports = threading.Lock()  # adopt: one such import at a time
        self._locks.on_takeover(self._finish_taken_over)

    # -- naming -----------------------------------------------------------------------
    def datastores(self) -> list[DatastoreInfo]:
        return self.backend.datastores()

    def default_datastore(self, vm: str, known: list[str] | None = None) -> str:
        return self._default_in(self.access.vmgroup_of(vm), vm, known)

    def _default_in(self, vmgroup: str, vm: str, known: list[str] | None = None) -> str:
        known = known if known is not None else [d.name for d in self.backend.datastores()]
        for candidate in (self.access.default_datastore(vmgroup),
                          self._configured_default, self.backend.default_datastore(vm)):
            if candidate and (match := match_datastore(candidate, known)):
                return match
        if not known:
            raise UnknownDatastore("no datastores are configured")
        return known[0]

    def _locate(self, vm: str, name: object) -> tuple[VolumeRef, DiskLocation]:
        return self.locate_in(self.access.vmgroup_of(vm), name, vm)

    def locate_in(self, vmgroup: str, name: object,
                  vm: str = "") -> tuple[VolumeRef, DiskLocation]:
        """Where ``name`` (``vol`` or ``vol@datastore``) of ``vmgroup`` lives; without a
        datastore, the vmgroup's default one."""
        ref = parse_volume_name(name)
        known = [d.name for d in self.backend.datastores()]
        default = self._default_in(vmgroup, vm, known)
        if ref.datastore is None:
            datastore = default
        else:
            matched = match_datastore(ref.datastore, known)
            if matched is None:
                raise UnknownDatastore(
                    f"unknown datastore {ref.datastore!r} in volume name {str(ref)!r}; known "
                    f"datastores: {', '.join(known)} (default {default})")
            datastore = matched
        check_mountable(ref.name, datastore)
        return ref, DiskLocation(datastore, vmgroup, ref.name)

    def _read(self, loc: DiskLocation) -> dict | None:
        """The stored metadata. Under a lease this process has held since it last read or
        wrote the file (a lease kept between operations, cluster_locks), what it read or
        wrote then: nobody else can have written meanwhile, since every writer holds the
        lease (one GET less per operation through the vSphere API, issue 15)."""
        fence = self._locks.fence(_key(loc))
        if fence is not None and METADATA in fence.memo and self._still_ours(loc):
            return json_copy(fence.memo[METADATA])  # type: ignore[return-value]
        data = self.backend.read_metadata(loc)
        if fence is not None:
            fence.memo[METADATA] = json_copy(data)
        return data

    def _wrote(self, loc: DiskLocation, data: dict | None) -> None:
        fence = self._locks.fence(_key(loc))
        if fence is not None:
            fence.memo[METADATA] = json_copy(data)  # as a read would give it

    def _forget(self, loc: DiskLocation) -> None:
        """Before a write: should it fail half-way, the next operation reads the file."""
        fence = self._locks.fence(_key(loc))
        if fence is not None:
            fence.memo.pop(METADATA, None)

    def _delete_metadata(self, loc: DiskLocation) -> None:
        self._forget(loc)
        self.backend.delete_metadata(loc, fence=self._locks.fence(_key(loc)))
        self._wrote(loc, None)

    def _meta(self, loc: DiskLocation) -> VolumeMeta | None:
        data = self._read(loc)
        if data is None:
            return None
        try:
            meta = VolumeMeta.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"corrupt metadata for {loc.name}@{loc.datastore}: {exc}") from exc
        if meta.name != loc.name:
            # Only a file system that ignores case opens Db.json for db (file_names).
            raise InvalidName(
                f"volume name {loc.name!r} differs only in case from existing volume "
                f"{meta.name!r} on datastore {loc.datastore}, whose file system ignores case; "
                "choose a name that differs in more than case")
        return meta

    def _visible(self, loc: DiskLocation) -> VolumeMeta:
        meta = self._meta(loc)
        if meta is None or meta.status == CREATING:
            raise VolumeNotFound(f"volume {loc.name}@{loc.datastore} does not exist")
        if meta.status == REMOVING:
            raise VolumeBusy(f"volume {meta.full_name} is being removed")
        return meta

    def _save(self, loc: DiskLocation, meta: VolumeMeta, attachment: bool = False,
              before_disk: bool = False) -> None:
        """Write metadata, fenced by this volume's lease (held by every caller).
        ``attachment``: the write records an attach or detach the backend just made, which
        recovery can rebuild from the backend; ``before_disk``: a create's `creating`
        record (Backend.write_metadata)."""
        fence = self._locks.fence(_key(loc))
        if fence is not None:
            fence.check()
        data = meta.to_dict()
        self._forget(loc)
        self.backend.write_metadata(loc, data, fence=fence, attachment=attachment,
                                    before_disk=before_disk)
        self._wrote(loc, data)

    def _change_recorded(self, loc: DiskLocation, before: VolumeMeta,
                         make: Callable[[dict | None], dict],
                         change: Callable[[RecordWrite], T], attachment: bool = True) -> T:
        """An attach or detach and its record (``Backend.attach_recorded``), fenced by
        the volume's lease; the lease's memory of the record follows what was written."""
        fence = self._locks.fence(_key(loc))
        if fence is not None:
            fence.check()
        written: list[dict] = []

        def making(answer: dict | None) -> dict:
            written.append(make(answer))
            return written[-1]
        self._forget(loc)
        result = change(RecordWrite(making, before.to_dict(), fence, attachment))
        if written:
            self._wrote(loc, written[-1])
        return result

    def _still_ours(self, loc: DiskLocation) -> bool:
        """Whether this process may still act on the volume (its lease, if any, holds)."""
        fence = self._locks.fence(_key(loc))
        try:
            if fence is not None:
                fence.check()
        except LeaseLost:
            return False
        return True

    def view(self, meta: VolumeMeta, loc: DiskLocation | None = None) -> dict:
        """The wire form of a volume; with ``loc``, also the disk's real allocation."""
        view = meta.to_dict()
        opts = view.pop("options")
        view.update({
            "name": meta.full_name, "volume": meta.name, "capacity_mb": opts["size_mb"],
            "diskformat": opts["diskformat"], "fstype": opts["fstype"],
            "access": opts["access"], "attach_as": opts["attach_as"],
            "clone_from": opts["clone_from"], "vsan_policy_name": opts["vsan_policy_name"],
        })
        if loc is not None:
            view["allocated_mb"] = round(self.backend.disk_allocated_bytes(loc) / MB, 1)
        return view

    # -- operations -------------------------------------------------------------------
    def create(self, vm: str, name: object, raw_options: object) -> dict:
        with self.gate.operation("create", vm, str(name)):
            options = parse_options(raw_options)
            _, loc = self._locate(vm, name)
            with self._locks.hold(_key(loc)):
                existing = self._meta(loc)
                if existing is not None and existing.visible:
                    return self.view(existing, loc)  # idempotent, as dockerd and retries expect
                if existing is not None:
                    self._finish_interrupted(loc, existing)
                source = None
                if options.clone_from:
                    # A clone is the source's size and filesystem, whatever was asked: count
                    # and record what the disk really is, so quotas see it.
                    source = self._clone_source(vm, options.clone_from)
                    options = replace(options, size_mb=source[1].options.size_mb,
                                      fstype=source[1].options.fstype)
                meta = VolumeMeta(name=loc.name, datastore=loc.datastore, vmgroup=loc.vmgroup,
                                  options=options, created_by=vm, docker_name=str(name))
                # Disks that take their space now (thick, clones) are made one at a time per
                # datastore: racing allocations could otherwise all fail half-way together.
                allocates = options.diskformat != "thin" or source is not None
                with self._locks.hold(f"space:{loc.datastore}") if allocates else nullcontext():
                    # No allocated_mb in a new volume's answer: on vSphere it costs a
                    # datastore search (two round trips) to say "almost nothing yet".
                    return self.view(self._make(vm, loc, meta, source))

    def _make(self, vm: str, loc: DiskLocation, meta: VolumeMeta,
              source: tuple[DiskLocation, VolumeMeta] | None) -> VolumeMeta:
        options = meta.options
        counted = self.access.counts_use(loc.vmgroup, loc.datastore)
        # The check and the `creating` metadata (which counts as used) go together, so two
        # creates in one vmgroup cannot both slip under its quota. Where nothing counts the
        # use (no total quota) and a lease fences the volume, the create marks itself in
        # the lease's staging folder instead (one MakeDirectory through the vSphere API,
        # where the record is a PUT, two moves and a read: issue 15): should this service
        # die before the volume's record is written, the lease's next holder finds the
        # mark and deletes the disk (_finish_taken_over).
        with self._quota_lock(loc, counted):
            self._check_space(vm, loc, options.size_mb)
            mark = None if counted else self._locks.mark(_key(loc), "create")
            if mark is None:
                self._save(loc, meta, before_disk=True)
        fault_point("create.metadata_written")
        try:
            if not self._still_ours(loc):
                raise LeaseLost(f"the lock on {loc.name}@{loc.datastore} expired before its "
                                "disk was made; nothing was created, retrying is safe")
            if source is None:
                disk_uuid = self.backend.create_disk(loc, options.size_mb, options.diskformat,
                                                     options.vsan_policy_name)
            else:
                with self._locks.hold(_key(source[0])):
                    self._require_detached(self._visible(source[0]), "clone")
                    disk_uuid = self.backend.clone_disk(source[0], loc, options.diskformat)
            fault_point("create.disk_written")
            meta = meta.evolve(status=DETACHED, disk_uuid=disk_uuid,
                               formatted=source is not None and source[1].formatted,
                               blank=source is None)
            self._save(loc, meta)
        except DiskExists as exc:
            self._undo_create(loc, disk_ours=False, mark=mark)
            raise DiskExists(
                f"cannot create volume {meta.docker_name}: {exc.message}. No dockvols volume "
                "records that disk (a vDVS volume not yet imported, or an import cut short); "
                f"it is left as it is. On the ESX host, `{_import_in_place(loc)}` adopts "
                "it under this name, or choose another name") from exc
        except BaseException:
            self._undo_create(loc, disk_ours=True, mark=mark)
            raise
        return meta

    def _quota_lock(self, loc: DiskLocation,
                    counted: bool | None = None) -> AbstractContextManager[None]:
        """The (datastore, vmgroup) lock, where a total quota makes creates and grows
        depend on each other; elsewhere none, since nothing they check is shared (on
        vSphere the lease costs 3 to 5 round trips, issue 15). An admin setting a total
        quota meanwhile races with creates either way: the lock never covered the DB."""
        if counted is None:
            counted = self.access.counts_use(loc.vmgroup, loc.datastore)
        if counted:
            return self._locks.hold(f"quota:{loc.datastore}/{loc.vmgroup}")
        return nullcontext()

    def _undo_create(self, loc: DiskLocation, disk_ours: bool, mark: str | None) -> None:
        """Take back what this create made, and only that. Under the volume's lease nobody
        else makes this volume's disk, so a disk there after a failure is this create's
        (made, then its answer lost) unless the backend found one there before it began
        (DiskExists). Once the lease is lost, nothing is touched: the name is the new
        holder's, and its recovery finishes the job."""
        if not self._still_ours(loc):
            log.warning("create of %s@%s failed after its lock was taken over; leaving its "
                        "files to the new holder", loc.name, loc.datastore)
            return
        if mark is not None and not disk_ours:
            # the disk found there is not this create's: its mark must not have the
            # lease's next holder delete it
            self._locks.unmark(_key(loc), mark)
            return
        try:
            if disk_ours:
                self.backend.delete_disk(loc)
            self._delete_metadata(loc)  # a record whose write failed may have landed
        except BaseException:
            if mark is not None:  # the mark stays, for the lease's next holder
                self._locks.abandon(_key(loc))
            raise

    def adopt(self, vm: str, loc: DiskLocation, source: str, options: VolumeOptions,
              origin: str) -> dict:
        """Make the detached disk at ``source`` (a path on ``loc``'s datastore) the volume
        ``loc``: quota checked, disk moved into place, metadata written, all under the
        volume's and the (datastore, vmgroup) create locks.

        Ordering differs from create on purpose: the disk is moved first and the metadata
        (already ``detached``) written last, so a crash in between leaves an unlisted disk in
        dockvols' folder, never ``creating`` metadata whose clean-up would delete the
        user's disk. ``formatted`` stays False: the guest probes before any mkfs."""
        # A fresh lease, never one kept from an operation before: a create's mark in it
        # would have the lease's next holder delete the user's disk, moved in below
        # before its record, should this service die in between.
        held = _volume_of_disk(loc.datastore, source)
        if held == loc:
            held = None  # the disk is already where the volume's goes: one lease
        with self.gate.operation("admin-import", vm, f"{loc.name}@{loc.datastore}"), \
                ExitStack() as leases:
            if held is not None:
                # The source's lease too: it keeps a create of that name from making its
                # record while its disk is moved away. Taken before the target's, never
                # while holding one, as a clone takes its source after its target (so the
                # two cannot wait on each other); imports that take two go one at a time.
                leases.enter_context(self._two_lease_imports)
                leases.enter_context(self._locks.hold(_key(held)))
            leases.enter_context(self._locks.hold(_key(loc), fresh=True))
            if source != loc.descriptor_path:  # in place, its record is `existing` below
                self._refuse_a_volumes_disk(loc.datastore, source, held, origin)
            existing = self._meta(loc)
            if existing is not None:
                state = "" if existing.visible else f" (it is {existing.status})"
                raise VolumeExists(f"cannot import {origin} as {loc.name}@{loc.datastore}: "
                                   f"vmgroup {loc.vmgroup} has a volume of that name"
                                   f"{state}; choose another --name")
            # docker volume ls shows docker_name: the short name only where it finds the disk
            default = self.access.default_datastore(loc.vmgroup) or self._configured_default
            short = default is not None and default.casefold() == loc.datastore.casefold()
            meta = VolumeMeta(name=loc.name, datastore=loc.datastore, vmgroup=loc.vmgroup,
                              options=options, created_by=f"import of {origin}",
                              docker_name=loc.name if short else meta_full(loc),
                              status=DETACHED)
            with self._locks.hold(f"quota:{loc.datastore}/{loc.vmgroup}"):
                self.access.check_create(
                    loc.vmgroup, loc.datastore, options.size_mb,
                    lambda: sum(m.options.size_mb
                                for m in self.volumes_in(loc.datastore, loc.vmgroup)))
                disk_uuid = self.backend.move_disk(loc.datastore, source, loc.descriptor_path)
                fault_point("import.disk_moved")
                try:
                    meta = meta.evolve(disk_uuid=disk_uuid)
                    self._save(loc, meta)
                except BaseException:
                    if source != loc.descriptor_path:
                        self.backend.move_disk(loc.datastore, loc.descriptor_path, source)
                    raise
            log.info("imported %s as %s (vmgroup %s, %s)", origin, meta.full_name,
                     loc.vmgroup, size_text(options.size_mb))
            return self.view(meta, loc)

    def _refuse_a_volumes_disk(self, datastore: str, source: str, held: DiskLocation | None,
                               origin: str) -> None:
        """An import moves its disk: never the disk of a volume dockvols records, which
        would be left a record without a disk. Volumes are not renamed by importing. The
        record is read once: through ``held`` where its name leads to that file, else as a
        file (a stem that names no volume)."""
        folder, _, file_name = source.rpartition("/")
        if not (folder.startswith("dockvols/") and file_name.endswith(".vmdk")):
            return
        record = f"{folder}/{file_name[:-len('.vmdk')]}.json"
        if held is not None and held.metadata_path == record:
            meta = self._meta(held)
            if meta is None:
                return
            what = meta.full_name
        elif self.backend.read_file(datastore, record, 1) is not None:
            what = f"the volume recorded in {record}"
        else:
            return
        raise VolumeExists(f"cannot import {origin}: it is the disk of {what}, and an import "
                           "moves its disk; a volume is not renamed by importing (for a copy "
                           "under another name, create one with -o clone-from)")

    def _clone_source(self, vm: str, clone_from: str) -> tuple[DiskLocation, VolumeMeta]:
        _, src = self._locate(vm, clone_from)
        try:
            meta = self._visible(src)
        except VolumeNotFound as exc:
            raise VolumeNotFound(f"cannot clone from {clone_from!r}: {exc.message} (in "
                                 f"vmgroup {src.vmgroup}; clone-from names a volume of "
                                 "the same vmgroup, name or name@datastore)") from exc
        self._require_detached(meta, "clone")
        return src, meta

    def _require_detached(self, meta: VolumeMeta, what: str) -> None:
        if meta.status == ATTACHED:
            raise VolumeInUse(f"cannot {what} volume {meta.full_name}: it is attached to VM "
                              f"{meta.attached_to}; detach it first")

    def _check_space(self, vm: str, loc: DiskLocation, size_mb: int) -> None:
        info = next(d for d in self.backend.datastores() if d.name == loc.datastore)
        self.access.check_create(
            loc.vmgroup, loc.datastore, size_mb,
            lambda: sum(m.reserved_mb for m in self.volumes_in(loc.datastore, loc.vmgroup)))
        if size_mb * MB > info.free_bytes:
            raise InsufficientSpace(
                f"cannot create {loc.name}@{loc.datastore} of {size_text(size_mb)}: "
                f"datastore {loc.datastore} has {rounded_size_text(info.free_bytes // MB)} free")

    def volumes_in(self, datastore: str, vmgroup: str | None) -> list[VolumeMeta]:
        """Metadata of every volume on a datastore (of one vmgroup, or all), any status."""
        return [e.meta for e in self._listed(datastore, vmgroup)]

    def _listed(self, datastore: str, vmgroup: str | None) -> list[Listed]:
        def parse(data: dict) -> VolumeMeta | None:
            try:
                return VolumeMeta.from_dict(data)
            except (TypeError, ValueError, KeyError):
                log.warning("skipping unreadable metadata on %s: %r", datastore, data)
                return None

        listed = self._listing.parse(datastore, self.backend.list_metadata(datastore), parse)
        return [e for e in listed if vmgroup is None or e.meta.vmgroup == vmgroup]

    def get(self, vm: str, name: object) -> dict:
        with self.gate.operation("get", vm, str(name)):
            _, loc = self._locate(vm, name)
            return self.view(self._visible(loc), loc)

    def _visible_listed(self, vm: str) -> list[Listed]:
        vmgroup = self.access.vmgroup_of(vm)
        return [e for ds in self.backend.datastores()
                for e in self._listed(ds.name, vmgroup) if e.meta.visible]

    def list(self, vm: str) -> list[dict]:
        with self.gate.operation("list", vm):
            return [dict(e.view(self.view)) for e in self._visible_listed(vm)]

    def list_json(self, vm: str) -> str:
        """``list`` as the API's JSON answer, ``{"volumes": [...]}``: each volume's part is
        encoded once per metadata version (esx_service/listing.py)."""
        with self.gate.operation("list", vm):
            return '{"volumes": [' + ", ".join(
                e.view_json(self.view) for e in self._visible_listed(vm)) + "]}"

    def remove(self, vm: str, name: object) -> None:
        with self.gate.operation("remove", vm, str(name)):
            _, loc = self._locate(vm, name)
            self._remove_locked(loc)

    def remove_at(self, vm: str, loc: DiskLocation) -> None:
        """Remove a volume of any vmgroup (admin); one already gone is fine."""
        with self.gate.operation("admin-remove", vm, f"{loc.name}@{loc.datastore}"):
            try:
                self._remove_locked(loc)
            except VolumeNotFound:
                pass

    def _remove_locked(self, loc: DiskLocation) -> None:
        with self._locks.hold(_key(loc)):
            meta = self._visible(loc)
            self._require_detached(meta, "remove")
            fence = self._locks.fence(_key(loc))
            if fence is None or self.access.counts_use(loc.vmgroup, loc.datastore):
                # no lease to mark in, or a total quota that other hosts count `removing`
                # records in: the record says `removing` until the disk is gone
                self._save(loc, meta.evolve(status=REMOVING))
                fault_point("remove.marked")
                self._discard(loc)
                return
            self._remove_parked(loc, meta, fence)

    def _remove_parked(self, loc: DiskLocation, meta: VolumeMeta, fence: Fence) -> None:
        """The record moved into the lease's staging folder before the disk goes (issue
        15: 4 round trips with a kept lease, where a `removing` record, the disk and the
        record's delete took 7): out of sight at once, and a mark the lease's next holder
        finds and finishes (deletes the disk) should this service die before it is gone.
        The staging folder goes with the lease's release."""
        fence.check()
        parked = f"{MARK}remove-{uuid.uuid4().hex[:12]}.json"
        self._forget(loc)
        self.backend.park_metadata(loc, fence, parked)
        self._wrote(loc, None)
        fault_point("remove.marked")
        try:
            if not self._still_ours(loc):
                raise LeaseLost(f"the lock on {meta.full_name} expired before its disk was "
                                "deleted; the lock's next holder deletes it")
            self.backend.delete_disk(loc)
        except LeaseLost:
            raise  # the parked record is the next holder's to finish
        except BaseException as exc:
            try:
                self.backend.unpark_metadata(loc, fence, parked)
                self._wrote(loc, meta.to_dict())
            except BaseException as again:
                log.error("removing %s failed (%s) and putting its record back failed too "
                          "(%s): the lock's next holder finishes the remove", meta.full_name,
                          exc, again)
                self._locks.abandon(_key(loc))
            raise

    def update_options(self, vm: str, loc: DiskLocation, changes: dict) -> VolumeMeta:
        """Change options of an existing volume of any vmgroup (admin); ``changes`` maps
        VolumeOptions field names to already validated values."""
        with self.gate.operation("admin-set", vm, f"{loc.name}@{loc.datastore}"), \
                self._locks.hold(_key(loc)):
            meta = self._visible(loc)
            meta = meta.evolve(options=replace(meta.options, **changes))
            self._save(loc, meta)
            return meta

    # -- resize (grow only) -------------------------------------------------------------
    def resize(self, vm: str, name: object, size: object) -> dict:
        """Grow a volume of the caller's vmgroup to ``size`` (``X[mb|gb|tb]``)."""
        with self.gate.operation("resize", vm, str(name)):
            _, loc = self._locate(vm, name)
            return self._resize(loc, size)

    def resize_at(self, vm: str, loc: DiskLocation, size: object) -> dict:
        """Grow a volume of any vmgroup (admin)."""
        with self.gate.operation("admin-resize", vm, f"{loc.name}@{loc.datastore}"):
            return self._resize(loc, size)

    def _resize(self, loc: DiskLocation, size: object) -> dict:
        """Crash ordering: the target is recorded (``resize_to``, counted by quotas) under
        the quota lock, then the disk grows, then the size becomes the target. A crash
        leaves at worst a recorded target, which the next start, attach or resize finishes;
        no step ever makes anything smaller. Answers the volume, its size before, and what
        happens to its filesystem."""
        if not isinstance(size, str):
            raise InvalidOption(f"invalid size {size!r}: use X[mb|gb|tb] with X a positive "
                                "integer, e.g. 20gb")
        size_mb = parse_size_mb(size)
        with self._locks.hold(_key(loc)):
            meta = self._visible(loc)
            if meta.resize_to is not None:
                meta = self._finish_resize(loc, meta)  # an interrupted grow first
            before = meta.options.size_mb
            if size_mb < before:
                raise InvalidOption(
                    f"cannot shrink volume {meta.full_name} to {size_text(size_mb)}: its "
                    f"size is {size_text(before)}, and volumes only grow")
            if size_mb > before:
                with self._quota_lock(loc):
                    self._check_growth(loc, meta, size_mb)
                    meta = meta.evolve(resize_to=size_mb)
                    self._save(loc, meta)
                fault_point("resize.recorded")
                try:
                    meta = self._finish_resize(loc, meta)
                except DockvolsError as exc:
                    # The disk is at least as big as before; forget the target so neither
                    # quotas nor recovery keep a grow that failed (the caller may retry).
                    try:
                        self._save(loc, meta.evolve(resize_to=None))
                    except DockvolsError as again:
                        log.error("resize of %s failed (%s) and its target stays recorded "
                                  "for recovery: %s", meta.full_name, exc, again)
                    raise
            return {"volume": self.view(meta, loc), "previous_capacity_mb": before,
                    "filesystem": _filesystem_note(meta, size_mb > before)}

    def _check_growth(self, loc: DiskLocation, meta: VolumeMeta, size_mb: int) -> None:
        what = (f"cannot grow volume {meta.full_name} from "
                f"{size_text(meta.options.size_mb)} to {size_text(size_mb)}")
        try:
            self.access.check_create(
                loc.vmgroup, loc.datastore, size_mb,
                lambda: sum(m.reserved_mb for m in self.volumes_in(loc.datastore, loc.vmgroup)
                            if m.name != loc.name))
        except (AccessDenied, QuotaExceeded) as exc:
            raise type(exc)(f"{what}: {exc.message}") from exc
        info = next(d for d in self.backend.datastores() if d.name == loc.datastore)
        extra_mb = size_mb - meta.options.size_mb
        if extra_mb * MB > info.free_bytes:
            raise InsufficientSpace(
                f"{what}: that needs {size_text(extra_mb)} more and datastore "
                f"{loc.datastore} has {rounded_size_text(info.free_bytes // MB)} free")

    def _finish_resize(self, loc: DiskLocation, meta: VolumeMeta) -> VolumeMeta:
        """Grow the disk to the recorded target, then record it as the size."""
        target = meta.resize_to
        if target is None:
            return meta
        if target > meta.options.size_mb:
            attach_info = meta.attach_info if meta.status == ATTACHED else None
            if not self._still_ours(loc):
                raise LeaseLost(f"the lock on {meta.full_name} expired before the grow; "
                                "nothing was grown, retrying is safe")
            self.backend.grow_disk(loc, target, attach_info)
            fault_point("resize.disk_grown")
            meta = meta.evolve(options=replace(meta.options, size_mb=target), resize_to=None)
        else:
            meta = meta.evolve(resize_to=None)  # never smaller: a stale target is dropped
        self._save(loc, meta)
        return meta

    def attach(self, vm: str, name: object) -> dict:
        with self.gate.operation("attach", vm, str(name)):
            _, loc = self._locate(vm, name)
            with self._locks.hold(_key(loc)):
                meta = self._finish_resize(loc, self._visible(loc))
                if meta.status == ATTACHED and meta.attached_to == vm:
                    if self.backend.is_attached(loc, vm, meta.attach_info):
                        return {"volume": self.view(meta), "attach": meta.attach_info}
                    meta = meta.evolve(status=DETACHED, attached_to=None, attach_info=None)
                elif meta.status == ATTACHED:
                    holder = meta.attached_to or "?"
                    # A record can say attached while the disk is not: an attach whose
                    # record went out beside its reconfigure and then failed, with a crash
                    # before the record was written back (attach_recorded). Only the
                    # refusal pays for the look.
                    if not self.backend.is_attached(loc, holder, meta.attach_info):
                        log.info("%s: its record says attached to VM %s, which does not "
                                 "have it; attaching it here", meta.full_name, holder)
                    elif self.backend.vm_powered_on(holder):
                        raise VolumeInUse(f"volume {meta.full_name} is attached to VM {holder}")
                    else:
                        log.info("detaching %s from powered-off VM %s", meta.full_name, holder)
                        self.backend.detach_disk(loc, holder, meta.attach_info)
                    meta = meta.evolve(status=DETACHED, attached_to=None, attach_info=None)
                    self._save(loc, meta)
                read_only = meta.options.access == "read-only" and meta.formatted
                fault_point("attach.before_disk")
                if not self._still_ours(loc):
                    raise LeaseLost(f"the lock on {meta.full_name} expired before the attach; "
                                    "nothing was attached, retrying is safe")
                # A blank disk's first attach lets the guest format it without probing it
                # (a superblock read, 1.2 ms of a first Mount here, issue 15). Blank is what
                # the record says, unless the backend sees data on the disk. Where it can
                # look, that look covers a record a host crash took back (the guest's
                # durable writes are there to see), so the record that the disk is blank
                # no more is an attachment record like any other; where it cannot, that
                # record is made crash-safe before the answer: no crash can bring `blank`
                # back once the guest may have written to the disk. The look comes before
                # the attach, which writes nothing to the disk, while the guest can come
                # only after it.
                # Only a disk recorded blank is looked at: after its first attach the
                # record alone says no (every attach after that skips the backend's look).
                seen = self.backend.disk_blank(loc) if meta.blank else None
                blank = meta.blank and seen is not False
                before = meta

                def attached(answer: dict | None) -> VolumeMeta:
                    return before.evolve(status=ATTACHED, attached_to=vm, attach_info=answer,
                                         blank=False)
                info = self._change_recorded(
                    loc, before, lambda answer: attached(answer).to_dict(),
                    lambda record: self.backend.attach_recorded(
                        loc, vm, read_only, before.options.attach_as, before.disk_uuid or None,
                        record),
                    attachment=seen is not None or not blank)
                meta = attached(info)
                answer: dict[str, object] = {"volume": self.view(meta), "attach": info}
                if blank:
                    answer["blank"] = True
                return answer

    def detach(self, vm: str, name: object, formatted: bool = False) -> dict:
        """``formatted``: the guest had a filesystem on the disk mounted, so from now on a
        read-only volume can be attached read-only (a fresh one is attached writable so its
        first mount can make the filesystem)."""
        with self.gate.operation("detach", vm, str(name)):
            _, loc = self._locate(vm, name)
            with self._locks.hold(_key(loc)):
                meta = self._visible(loc)
                if meta.status != ATTACHED or meta.attached_to != vm:
                    return self.view(meta)  # not attached here: nothing to do
                if not self._still_ours(loc):
                    raise LeaseLost(f"the lock on {meta.full_name} expired before the detach; "
                                    "nothing was detached, retrying is safe")
                after = meta.evolve(status=DETACHED, attached_to=None, attach_info=None,
                                    formatted=meta.formatted or formatted)
                data = after.to_dict()
                self._change_recorded(
                    loc, meta, lambda _answer: data,
                    lambda record: self.backend.detach_recorded(loc, vm, meta.attach_info,
                                                                record))
                return self.view(after)

    # -- recovery ---------------------------------------------------------------------
    def _discard(self, loc: DiskLocation, disk: bool = True) -> None:
        if not self._still_ours(loc):
            raise LeaseLost(f"the lock on {loc.name}@{loc.datastore} expired; nothing was "
                            "deleted, retrying is safe")
        if disk:
            self.backend.delete_disk(loc)
        self._delete_metadata(loc)

    def _finish_taken_over(self, key: str, marks: dict[str, float]) -> None:
        """What a dead holder of the volume's lease marked (a create, a remove's parked
        record), finished by the lease's next holder before its own operation: where the
        volume has no visible record, its disk is deleted (a create that never answered, or
        a remove that did not finish); a visible record means the marked work finished or
        never began, and the volume stays as it is. A disk older than every create's mark,
        with no remove marked, was not made by them and stays (made_before)."""
        datastore, vmgroup, name = key.split("/")
        loc = DiskLocation(datastore, vmgroup, name)
        self._forget(loc)
        data = self.backend.read_metadata(loc)
        meta = VolumeMeta.from_dict(data) if data is not None else None
        left = ", ".join(sorted(marks))
        if meta is not None and meta.visible:
            log.info("%s: a dead holder of its lock left %s; the volume is whole",
                     meta.full_name, left)
            return
        created = [made for mark, made in marks.items() if mark.startswith(CREATE_MARK)]
        if len(created) == len(marks) and made_before(self.backend.file_times(loc).disk,
                                                      min(created)):
            log.warning("%s@%s: a dead holder's create (%s) met a disk that was there before "
                        "it; the disk is left as it is (import it with dockvols-admin volume "
                        "import)", name, datastore, left)
            return
        log.warning("finishing what a dead holder of the lock on %s@%s left (%s): deleting "
                    "its disk", name, datastore, left)
        if not self._still_ours(loc):
            raise LeaseLost(f"the lock on {name}@{datastore} expired before a dead holder's "
                            "work was finished; retrying is safe")
        self.backend.delete_disk(loc)
        if meta is not None:
            self._delete_metadata(loc)

    def _finish_interrupted(self, loc: DiskLocation, meta: VolumeMeta) -> None:
        times = self.backend.file_times(loc) if meta.status == CREATING else None
        if times is not None and made_before(times.disk, times.record):
            log.warning("cleaning up %s left creating by an interrupted create: its record "
                        "only, the disk there is older than the create and stays (import it "
                        "with dockvols-admin volume import)", meta.full_name)
            self._discard(loc, disk=False)
            return
        log.warning("cleaning up %s left %s by an interrupted operation",
                    meta.full_name, meta.status)
        self._discard(loc)

    def recover(self) -> dict:
        """Finish what a crash interrupted and drop attachments that no longer exist.

        Other hosts may be working on the same datastore meanwhile: a volume whose lock is
        held elsewhere is skipped (its holder is alive and finishes it), and each volume's
        metadata is read again under its lock rather than trusted from the listing. A volume
        (or datastore) this host cannot settle, e.g. the kernel answering ENODEV for its loop
        device, is named in ``unsettled``: one bad disk must not keep the service from
        starting for all the others."""
        report: dict = {"cleaned": 0, "detached": 0, "grown": 0, "skipped": 0,
                        "temp_files": 0, "orphans": 0, "unsettled": []}
        for ds in self.backend.datastores():
            try:
                listing = self.volumes_in(ds.name, None)
            except (DockvolsError, OSError) as exc:
                log.error("recovery could not list datastore %s: %s", ds.name, exc)
                report["unsettled"].append(f"datastore {ds.name}")
                continue
            for listed in listing:
                loc = DiskLocation(listed.datastore, listed.vmgroup, listed.name)
                with self._locks.try_hold(_key(loc)) as mine:
                    if not mine:
                        report["skipped"] += 1
                        continue
                    try:
                        self._recover_one(loc, report)
                    except (DockvolsError, OSError) as exc:  # ENODEV, EIO... from the kernel
                        log.error("recovery of %s failed, left as it is: %s",
                                  listed.full_name, exc)
                        report["unsettled"].append(listed.full_name)
            try:
                report["temp_files"] += self._locks.sweep(ds.name)
                report["orphans"] += self.backend.release_orphans(ds.name)
            except (DockvolsError, OSError) as exc:
                log.error("recovery of datastore %s failed: %s", ds.name, exc)
        log.info("recovery: %s", report)
        return report

    def _recover_one(self, loc: DiskLocation, report: dict) -> None:
        meta = self._meta(loc)
        if meta is None:
            return  # removed by another host since the listing
        if meta.status in (CREATING, REMOVING):
            self._finish_interrupted(loc, meta)
            report["cleaned"] += 1
        elif meta.status == ATTACHED and not self.backend.is_attached(
                loc, meta.attached_to or "", meta.attach_info):
            self._save(loc, meta.evolve(status=DETACHED, attached_to=None, attach_info=None))
            report["detached"] += 1
        elif meta.status == DETACHED and self.backend.is_attached(loc, "", None):
            # attached by a request whose reply never went out: nobody uses it
            self.backend.detach_disk(loc, "", None)
            report["detached"] += 1
        if meta.visible and meta.resize_to is not None:
            self._finish_resize(loc, self._visible(loc))
            report["grown"] += 1


def made_before(disk: float | None, when: float | None) -> bool:
    """Whether a disk last changed at ``disk`` (Backend.file_times, the datastore's clock)
    was there before ``when``, a create's mark or `creating` record: then the create did
    not make it. It met it (DiskExists: a vDVS disk not yet imported, an import cut short)
    and died before it could say so. Such a disk is never deleted. The times are the
    datastore's stamps, so this judges wrongly only where the clocks stamping them moved
    between the two: a create's own disk stamped by a clock behind the mark's is kept (an
    orphan: the next create says DiskExists; `dockvols-admin volume import` adopts it), and
    a foreign disk made less than a clock's lead before the create (a host's clock ahead
    of the one that made the mark, or a clock stepped back since) counts as the create's.
    A disk that sat there for longer than any clock is wrong is always kept."""
    return disk is not None and when is not None and disk < when


def _filesystem_note(meta: VolumeMeta, grown: bool) -> str:
    if not grown:
        return f"already {size_text(meta.options.size_mb)}: nothing to do"
    if meta.status == ATTACHED:
        return (f"the dockvols plugin of VM {meta.attached_to} grows the mounted filesystem "
                "online within seconds")
    return "the filesystem grows at the next mount"


def meta_full(loc: DiskLocation) -> str:
    return f"{loc.name}@{loc.datastore}"


def _key(loc: DiskLocation) -> str:
    return f"{loc.datastore}/{loc.vmgroup}/{loc.name}"


def _import_in_place(loc: DiskLocation) -> str:
    """The admin command that adopts the disk at the volume's own path as that volume
    (--from-vdvs would skip one in a vmgroup folder vDVS did not know)."""
    command = (f"dockvols-admin volume import --path "
               f"{shlex.quote(ds_path(loc.datastore, loc.descriptor_path))} "
               f"--name {shlex.quote(loc.name)}")
    if loc.vmgroup != DEFAULT_VMGROUP:
        command += f" --vmgroup {shlex.quote(loc.vmgroup)}"
    return command


def _volume_of_disk(datastore: str, path: str) -> DiskLocation | None:
    """The volume whose disk ``path`` would be in dockvols' layout (dockvols/<vmgroup>/
    <stem>.vmdk, a stem that names its volume); None elsewhere."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "dockvols" or not parts[2].endswith(".vmdk"):
        return None
    name = name_of_stem(parts[2][:-len(".vmdk")])
    return DiskLocation(datastore, parts[1], name) if name else None
