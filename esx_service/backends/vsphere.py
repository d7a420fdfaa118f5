"""The vsphere backend: VMDKs on vSphere datastores through pyVmomi (ESXi or vCenter).

Disks: VirtualDiskManager create/copy/delete. Attach/detach: ReconfigVM_Task on the calling
VM, PVSCSI controllers only, serialised per VM. Metadata: ``<name>.json`` beside the disk,
through ``esx_service.vsphere.datastore_files``. Storage policies: PBM (vCenter).

vcsim (the test peer) does not refuse a disk attached twice or unit 7, so both rules are
enforced here rather than left to the server.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pyVmomi import vim, vmodl

from dockvols_common.locks import NamedLocks

from ..config import VsphereSettings
from ..errors import BackendError, DockvolsError, InvalidOption, VolumeInUse
from ..lease_store import LeaseStore, LocalLeaseStore
from ..vsphere import devices
from ..vsphere.datastore_files import (
    DatastoreFiles,
    HttpDatastoreFiles,
    LocalDatastoreFiles,
    make_folder,
)
from ..vsphere.faults import translate
from ..vsphere.inventory import Inventory, VmRef
from ..vsphere.lease_store import HttpLeaseStore
from ..vsphere.paths import ds_path
from ..vsphere.session import RoundTrips, VsphereSession
from ..vsphere.storage_policies import StoragePolicies
from .base import DatastoreInfo, DiskLocation, Fence, FileTimes, RecordWrite

log = logging.getLogger("dockvols.vsphere")

# docker volume create -o diskformat=...  ->  VirtualDiskManager disk types
DISK_TYPES = {"thin": "thin", "zeroedthick": "preallocated",
              "eagerzeroedthick": "eagerZeroedThick"}
# The descriptor's adapter type; any controller (PVSCSI included) can use such a disk.
ADAPTER_TYPE = "lsiLogic"
ESXI_VOLUMES = "/vmfs/volumes"
# What a server answers for an argument it does not support (vcsim's vCenter model for a
# CopyVirtualDisk destination spec).
NOT_SUPPORTED = (vmodl.fault.NotImplemented, vmodl.fault.NotSupported)


def _record_bytes(data: dict) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"


def _file_name(path: str) -> str:
    """The last part of a datastore path: what the datastore browser matches."""
    return path.rpartition("/")[2]


class VsphereBackend:
    name = "vsphere"

    def __init__(self, session: VsphereSession, datacenter: str | None = None,
                 datastores: tuple[str, ...] = (), bound_vm: str | None = None,
                 metadata_access: str = "auto", datastore_ttl: float = 5.0) -> None:
        if metadata_access not in ("auto", "http", "local"):
            raise ValueError(f"metadata_access must be auto, http or local: {metadata_access}")
        self.session = session
        self.inventory = Inventory(session, datacenter, datastores, ttl=datastore_ttl)
        self.bound_vm = bound_vm  # the VM the local socket serves: the default caller
        self._metadata_access = metadata_access
        self._files: DatastoreFiles | None = None
        self._vm_locks = NamedLocks()
        self.storage_policies = StoragePolicies(session)  # PBM: the admin's and create's

    @classmethod
    def from_settings(cls, settings: VsphereSettings, bound_vm: str | None = None,
                      on_api_call: Callable[[str, float], None] | None = None,
                      **kwargs: Any) -> VsphereBackend:
        session = VsphereSession(settings.host, settings.port, settings.user,
                                 settings.password, settings.insecure, settings.ca_file,
                                 on_call=on_api_call)
        return cls(session, settings.datacenter, settings.datastores, bound_vm=bound_vm,
                   **kwargs)

    @property
    def round_trips(self) -> RoundTrips:
        return self.session.round_trips

    def close(self) -> None:
        self.session.logout()

    def __enter__(self) -> VsphereBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- datastores -------------------------------------------------------------------
    def datastores(self) -> list[DatastoreInfo]:
        return [DatastoreInfo(name=d.name, type=d.type, capacity_bytes=d.capacity_bytes,
                              free_bytes=d.free_bytes, url=d.url)
                for d in self.inventory.datastores() if d.accessible]

    def default_datastore(self, vm: str) -> str | None:
        found = self.inventory.vm(vm or self.bound_vm or "")
        return found.home_datastore if found else None

    # -- metadata ---------------------------------------------------------------------
    @property
    def files(self) -> DatastoreFiles:
        if self._files is None:
            local = self._metadata_access == "local" or (
                self._metadata_access == "auto" and os.path.isdir(ESXI_VOLUMES))
            if local:  # on the ESXi host: datastores are mounted, summary.url says where
                self._files = LocalDatastoreFiles(
                    lambda ds: self.inventory.datastore(ds).url.removeprefix("ds://"))
            else:
                dc, dc_path = self.inventory.datacenter()
                self._files = HttpDatastoreFiles(
                    self.session, dc, dc_path, lambda ds: self.inventory.datastore(ds).browser)
        return self._files

    def lease_store(self) -> LeaseStore:
        """Leases through the same path as metadata: the host's mounts on ESXi, the
        vSphere file API remotely."""
        files = self.files
        if isinstance(files, LocalDatastoreFiles):
            return LocalLeaseStore(files.root)
        dc, _ = self.inventory.datacenter()
        return HttpLeaseStore(self.session, dc, lambda ds: self.inventory.datastore(ds).browser)

    def list_metadata(self, datastore: str) -> list[dict]:
        name = self.inventory.datastore(datastore).name
        found = []
        for path in self.files.find(name, "dockvols", "*.json"):
            parts = path.split("/")
            # only dockvols/<vmgroup>/<name>.json; never temporary or hidden files
            if len(parts) == 3 and not parts[2].startswith("."):
                data = self._parse(name, path, self.files.read(name, path))
                if data is not None:
                    found.append(data)
        return found

    def read_metadata(self, loc: DiskLocation) -> dict | None:
        name = self.inventory.datastore(loc.datastore).name
        return self._parse(name, loc.metadata_path, self.files.read(name, loc.metadata_path))

    def write_metadata(self, loc: DiskLocation, data: dict, fence: Fence | None = None,
                       attachment: bool = False, before_disk: bool = False) -> None:
        # A disk's attachment is in the VM's configuration and outlives a host crash: every
        # record is written the one durable way.
        self._write_record(loc, data, fence)

    def delete_metadata(self, loc: DiskLocation, fence: Fence | None = None) -> None:
        self.files.delete(self.inventory.datastore(loc.datastore).name, loc.metadata_path,
                          fence)

    def park_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        self.files.park(self.inventory.datastore(loc.datastore).name, loc.metadata_path,
                        fence, name)

    def unpark_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        self.files.unpark(self.inventory.datastore(loc.datastore).name, loc.metadata_path,
                          fence, name)

    @staticmethod
    def _parse(datastore: str, path: str, raw: bytes | None) -> dict | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BackendError(f"unreadable metadata [{datastore}] {path}: {exc}") from exc
        return data if isinstance(data, dict) else None

    # -- disks ------------------------------------------------------------------------
    def _disk_path(self, loc: DiskLocation) -> str:
        return ds_path(self.inventory.datastore(loc.datastore).name, loc.descriptor_path)

    def _run_task(self, start: Any, what: str) -> Any:
        try:
            return self.session.wait(self.session.invoke(start), what)
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def _make_folder(self, loc: DiskLocation) -> None:
        self._make_ds_folder(ds_path(self.inventory.datastore(loc.datastore).name, loc.folder))

    def _make_ds_folder(self, folder: str) -> None:
        make_folder(self.session, self.inventory.datacenter()[0], folder)

    def _in_folder(self, loc: DiskLocation, start: Any, what: str) -> Any:
        """Run a task that creates a file in the volume's folder. The folder is there: the
        `creating` metadata was written into it first (the write makes it if needed), so
        no MakeDirectory up front (one round trip per create, issue 15); only if the
        folder vanished meanwhile, make it and try once more."""
        try:
            return self.session.wait(self.session.invoke(start), what)
        except vim.fault.FileNotFound:
            self._make_folder(loc)
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        return self._run_task(start, what)

    def create_disk(self, loc: DiskLocation, size_mb: int, diskformat: str,
                    storage_policy: str | None) -> str:
        path = self._disk_path(loc)
        if diskformat not in DISK_TYPES:
            raise InvalidOption(f"invalid diskformat {diskformat!r}: allowed are "
                                f"{', '.join(DISK_TYPES)}")
        # an unknown policy is refused before anything is created
        profile_id = (self.storage_policies.policy_id(storage_policy) if storage_policy
                      else None)
        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            diskType=DISK_TYPES[diskformat], adapterType=ADAPTER_TYPE, capacityKb=size_mb * 1024)
        if profile_id:
            spec.profile = [vim.vm.DefinedProfileSpec(profileId=profile_id)]
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        self._in_folder(loc, lambda: vdm.CreateVirtualDisk_Task(name=path, datacenter=dc,
                                                                spec=spec),
                        f"creating disk {path}")
        # ESX gives every new disk a unique UUID of its own: read it rather than set one.
        return self._query_uuid(path)

    def clone_disk(self, src: DiskLocation, dst: DiskLocation, diskformat: str) -> str:
        source, target = self._disk_path(src), self._disk_path(dst)
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        self._make_folder(dst)
        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            diskType=DISK_TYPES[diskformat], adapterType=ADAPTER_TYPE)
        what = f"copying disk {source} to {target}"
        try:
            self.session.wait(self.session.invoke(lambda: vdm.CopyVirtualDisk_Task(
                sourceName=source, sourceDatacenter=dc, destName=target, destDatacenter=dc,
                destSpec=spec, force=False)), what)
        except NOT_SUPPORTED:
            # vCenter (and vcsim's vCenter model) may refuse a destination spec: copy as is.
            log.warning("%s: the server refused a disk format for the copy; copying with the "
                        "server's default format instead of %s", what, diskformat)
            self._run_task(lambda: vdm.CopyVirtualDisk_Task(
                sourceName=source, sourceDatacenter=dc, destName=target, destDatacenter=dc,
                force=False), what)
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        # A copy carries its source's UUID: give it its own so the guest's WWNs stay unique.
        new_uuid = "6000c29" + uuid.uuid4().hex[7:]
        try:
            self.session.invoke(lambda: vdm.SetVirtualDiskUuid(
                name=target, datacenter=dc, uuid=devices.vmware_uuid_form(new_uuid)))
        except vim.fault.VimFault as exc:
            raise translate(exc, f"setting the UUID of {target}") from exc
        return self._query_uuid(target)  # what the disk really says (vcsim ignores the set)

    def _query_uuid(self, path: str) -> str:
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        try:
            raw = self.session.invoke(lambda: vdm.QueryVirtualDiskUuid(name=path, datacenter=dc))
        except vim.fault.VimFault as exc:
            raise translate(exc, f"reading the UUID of {path}") from exc
        return devices.normalise_uuid(raw)

    def delete_disk(self, loc: DiskLocation) -> None:
        path = self._disk_path(loc)
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        what = f"deleting disk {path}"
        try:
            self.session.wait(self.session.invoke(
                lambda: vdm.DeleteVirtualDisk_Task(name=path, datacenter=dc)), what)
        except vim.fault.FileNotFound:
            pass  # already gone: delete is idempotent
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def grow_disk(self, loc: DiskLocation, size_mb: int, attach_info: dict | None) -> None:
        """Attached: reconfigure the VM's VirtualDisk to the new capacity (online; the guest
        rescans its SCSI device). Detached: ExtendVirtualDisk_Task. Never shrinks."""
        ds = self.inventory.datastore(loc.datastore)
        path = ds_path(ds.name, loc.descriptor_path)
        for vm_name, devs in self.inventory.devices_of_vms_on(ds).values():
            if devices.find_disk(devs, path) is None:
                continue
            target = self._require_vm(vm_name)
            with self._vm_locks.hold(target.ref._moId):  # a fresh device list, under the lock
                disk = devices.find_disk(self._devices(target), path)
                spec = devices.grow_disk_spec(disk, size_mb) if disk is not None else None
                if spec is not None:
                    self._reconfigure(target, [spec], f"growing {path} on VM {target.name} "
                                                      f"to {size_mb}mb")
            if disk is not None:
                return
        self._extend_detached(loc, path, size_mb)

    def _extend_detached(self, loc: DiskLocation, path: str, size_mb: int) -> None:
        current_kb = self._capacity_kb(loc)
        if current_kb is not None and current_kb >= size_mb * 1024:
            return  # already that big (a repeated grow): never shrink
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        what = f"extending disk {path} to {size_mb}mb"
        try:
            self.session.wait(self.session.invoke(lambda: vdm.ExtendVirtualDisk_Task(
                name=path, datacenter=dc, newCapacityKb=size_mb * 1024, eagerZero=False)), what)
        except (*NOT_SUPPORTED, vmodl.fault.MethodNotFound) as exc:
            raise BackendError(f"{what}: {self.session.endpoint} does not implement "
                               "ExtendVirtualDisk_Task (vcsim 0.24 lacks it); attach the "
                               "volume and resize it again to grow it online") from exc
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def _capacity_kb(self, loc: DiskLocation) -> int | None:
        """The disk's capacity from the datastore browser (a VmDiskQuery), None when the
        server does not say (vcsim 0.24 answers a plain FileInfo)."""
        query = vim.host.DatastoreBrowser.VmDiskQuery(
            details=vim.host.DatastoreBrowser.VmDiskQuery.Details(capacityKb=True))
        for found in self._find_descriptor(loc, query):
            capacity = getattr(found, "capacityKb", None)
            if capacity:
                return int(capacity)
        return None

    def _find_descriptor(self, loc: DiskLocation, query: vim.host.DatastoreBrowser.Query
                         ) -> list[vim.host.DatastoreBrowser.FileInfo]:
        """The datastore browser's entry for the volume's descriptor, found under its file
        stem (a name's encoded form: "my db" is my~20db.vmdk), never the name as typed."""
        return self._search_folder(loc, vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=[_file_name(loc.descriptor_path)], query=[query]),
            f"sizing disk {loc.descriptor_path}")

    def _search_folder(self, loc: DiskLocation, spec: vim.host.DatastoreBrowser.SearchSpec,
                       what: str) -> list[vim.host.DatastoreBrowser.FileInfo]:
        """What the datastore browser finds in the volume's vmgroup folder; [] where the
        folder is missing."""
        ds = self.inventory.datastore(loc.datastore)
        what = f"{what} on {ds.name}"
        try:
            result = self.session.wait(self.session.invoke(
                lambda: ds.browser.SearchDatastore_Task(
                    datastorePath=ds_path(ds.name, loc.folder), searchSpec=spec)), what)
        except vim.fault.FileNotFound:
            return []
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        return list(result.file or []) if result else []

    def disk_blank(self, loc: DiskLocation) -> bool | None:
        return None  # a datastore search would tell, at a round trip: the record says

    def file_times(self, loc: DiskLocation) -> FileTimes:
        descriptor, record = _file_name(loc.descriptor_path), _file_name(loc.metadata_path)
        files = self._search_folder(loc, vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=[descriptor, record],
            details=vim.host.DatastoreBrowser.FileInfo.Details(modification=True)),
            f"dating the files of {loc.descriptor_path}")
        found = {f.path: f.modification.timestamp() for f in files
                 if f.modification is not None}
        return FileTimes(found.get(descriptor), found.get(record))

    def disk_allocated_bytes(self, loc: DiskLocation) -> int:
        files = self._search_folder(loc, vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=[f"{loc.stem}.vmdk", f"{loc.stem}-*.vmdk"],
            details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True, fileType=True)),
            f"sizing disk {loc.descriptor_path}")
        return sum(f.fileSize or 0 for f in files)

    # -- adopting disks made elsewhere ------------------------------------------------
    def read_file(self, datastore: str, path: str, limit: int | None = None) -> bytes | None:
        data = self.files.read(self.inventory.datastore(datastore).name, path)
        return data if data is None or limit is None else data[:limit]

    def find_files(self, datastore: str, folder: str, pattern: str) -> list[str]:
        return self.files.find(self.inventory.datastore(datastore).name, folder, pattern)

    def disk_users(self, datastore: str, path: str) -> list[str]:
        ds = self.inventory.datastore(datastore)
        using = self.inventory.devices_of_vms_on(ds)
        names = devices.holders(dict(using.values()), ds_path(ds.name, path))
        return [f"{name} ({'running' if self.vm_powered_on(name) else 'powered off'})"
                for name in names]

    def move_disk(self, datastore: str, src: str, dst: str) -> str:
        ds_name = self.inventory.datastore(datastore).name
        source, target = ds_path(ds_name, src), ds_path(ds_name, dst)
        vdm = self.session.disk_manager
        dc, _ = self.inventory.datacenter()
        self._make_ds_folder(ds_path(ds_name, dst.rpartition("/")[0]))
        # The host moves descriptor, extents and side-cars together (a rename on one datastore)
        self._run_task(lambda: vdm.MoveVirtualDisk_Task(
            sourceName=source, sourceDatacenter=dc, destName=target, destDatacenter=dc,
            force=False), f"moving disk {source} to {target}")
        return self._query_uuid(target)

    # -- attach -----------------------------------------------------------------------
    def _require_vm(self, vm: str) -> VmRef:
        found = self.inventory.vm(vm)
        if found is None:
            raise BackendError(f"VM {vm!r} not found at {self.session.endpoint} (looked for a "
                               "VM of that name or BIOS UUID)")
        return found

    def _devices(self, vm: VmRef) -> list[Any]:
        try:
            props = self.session.retrieve_one(vm.ref, ["config.hardware.device"])
        except vim.fault.VimFault as exc:
            raise translate(exc, f"reading the devices of VM {vm.name}") from exc
        return list(props.get("config.hardware.device") or [])

    def _reconfigure(self, vm: VmRef, changes: list[Any], what: str) -> None:
        spec = vim.vm.ConfigSpec(deviceChange=changes)
        self._run_task(lambda: vm.ref.ReconfigVM_Task(spec=spec), what)

    def attach_disk(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                    disk_uuid: str | None = None) -> dict:
        return self._attach(loc, vm, read_only, attach_as, disk_uuid, None)

    def attach_recorded(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                        disk_uuid: str | None, record: RecordWrite) -> dict:
        """The record sent beside the reconfigure (Backend.attach_recorded): it says where
        the disk will be (the free slot chosen, its controller's PCI slot, the UUID recorded
        at create); should the host put it elsewhere, it is written again. 6 round trips
        with a kept lease, not 7 (issue 15)."""
        return self._attach(loc, vm, read_only, attach_as, disk_uuid, record)

    def _attach(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                disk_uuid: str | None, record: RecordWrite | None) -> dict:
        ds = self.inventory.datastore(loc.datastore)
        path = ds_path(ds.name, loc.descriptor_path)
        target = self._require_vm(vm)
        # One reconfigure per VM at a time: concurrent ones would pick the same free unit.
        with self._vm_locks.hold(target.ref._moId):
            using = self.inventory.devices_of_vms_on(ds, also=target.ref)
            _, current = using.pop(target.ref._moId, (target.name, []))
            disk = devices.find_disk(current, path)
            if disk is not None:  # attached here already
                answer = self._answer(current, disk, disk_uuid, path)
                if record is not None:
                    self._write_record(loc, record.make(answer), record.fence)
                return answer
            holders = devices.holders(dict(using.values()), path)
            if holders:
                raise VolumeInUse(f"disk {path} is attached to VM {holders[0]}")
            slot = devices.find_free_slot(current, vm=f"VM {target.name}")
            specs = devices.add_disk_specs(path, slot, attach_as, read_only)
            what = f"attaching {path} to VM {target.name}"
            foreseen = devices.foreseen_answer(current, slot, disk_uuid)
            failed: DockvolsError | None = None
            if record is None:
                current = self._reconfigure_and_read(target, specs, what)
            else:
                current, failed = self._reconfigure_recorded(target, specs, what, loc, record,
                                                             record.make(foreseen))
            disk = devices.find_disk(current, path)
            if disk is None:  # a read that raced the task's end: look once more
                current = self._devices(target)
                disk = devices.find_disk(current, path)
            if disk is None:
                if record is not None:
                    self._write_back(loc, record, what)
                raise BackendError(f"{what}: the reconfigure succeeded but the VM shows no "
                                   "such disk")
            if failed is not None:  # the record did not land: the attach is taken back
                self._reconfigure(target, [devices.remove_disk_spec(disk)],
                                  f"detaching {path} from VM {target.name}")
                raise failed
            answer = self._answer(current, disk, disk_uuid, path)
            if record is not None and answer != foreseen:
                self._write_record(loc, record.make(answer), record.fence)
            return answer

    def detach_recorded(self, loc: DiskLocation, vm: str, attach_info: dict | None,
                        record: RecordWrite) -> None:
        """The record sent beside the reconfigure (Backend.detach_recorded): 6 round trips
        with a kept lease, not 7 (issue 15)."""
        if not self._detach(loc, vm, record):
            self._write_record(loc, record.make(None), record.fence)  # not attached there

    def _reconfigure_recorded(self, vm: VmRef, changes: list[Any], what: str,
                              loc: DiskLocation, record: RecordWrite, data: dict,
                              read_devices: bool = True
                              ) -> tuple[list[Any], DockvolsError | None]:
        """Reconfigure with the record's write sent beside it, both ends (and the VM's
        devices) in one read. Raises the reconfigure's failure, after writing the record
        before back if the new one landed; answers the devices after it, and the record's
        failure (None when it landed) for the caller to judge."""
        spec = vim.vm.ConfigSpec(deviceChange=changes)
        try:
            task = self.session.invoke(lambda: vm.ref.ReconfigVM_Task(spec=spec))
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        also = [(vm.ref, ["config.hardware.device"])] if read_devices else []
        try:
            sent = self.files.send_write(self.inventory.datastore(loc.datastore).name,
                                         loc.metadata_path, _record_bytes(data), record.fence)
        except DockvolsError as exc:  # nothing of the record sent: the change goes on alone
            ends, props = self.session.wait_all([task], what, also=also)
            if ends[0].error is not None:
                raise translate(ends[0].error, what) from exc
            return (list(props[0].get("config.hardware.device") or []) if props else []), exc
        ends, props = self.session.wait_all([task, *sent.tasks], what, also=also)
        failed: DockvolsError | None = None
        try:
            sent.finish(ends[1:])
        except DockvolsError as exc:
            failed = exc
        if ends[0].error is not None:
            if failed is None:  # the record says the change happened: it did not
                self._write_back(loc, record, what)
            raise translate(ends[0].error, what)
        return (list(props[0].get("config.hardware.device") or []) if props else []), failed

    def _write_back(self, loc: DiskLocation, record: RecordWrite, what: str) -> None:
        try:
            self._write_record(loc, record.previous, record.fence)
        except DockvolsError as exc:  # recovery checks the record against the devices
            log.error("%s failed, and writing back the record of %s@%s failed too: %s",
                      what, loc.name, loc.datastore, exc.message)

    def _write_record(self, loc: DiskLocation, data: dict, fence: Fence | None) -> None:
        self.files.write(self.inventory.datastore(loc.datastore).name, loc.metadata_path,
                         _record_bytes(data), fence)

    def _answer(self, current: list[Any], disk: Any, disk_uuid: str | None, path: str) -> dict:
        backing_uuid = getattr(disk.backing, "uuid", None)
        # Real hosts fill backing.uuid; vcsim leaves it unset: then the UUID the volume
        # layer recorded at create, and only without one ask the disk itself.
        if backing_uuid:
            disk_uuid = devices.normalise_uuid(backing_uuid)
        elif not disk_uuid:
            disk_uuid = self._query_uuid(path)
        return devices.attach_answer(current, disk, disk_uuid)

    def _reconfigure_and_read(self, vm: VmRef, changes: list[Any], what: str) -> list[Any]:
        """Reconfigure, and read the VM's devices in the same round trip as the task's
        end (issue 15: the device list is what the guest needs to find the disk)."""
        spec = vim.vm.ConfigSpec(deviceChange=changes)
        try:
            task = self.session.invoke(lambda: vm.ref.ReconfigVM_Task(spec=spec))
            ends, (props,) = self.session.wait_all(
                [task], what, also=[(vm.ref, ["config.hardware.device"])])
            if ends[0].error is not None:
                raise ends[0].error
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        return list(props.get("config.hardware.device") or [])

    def detach_disk(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> None:
        self._detach(loc, vm, None)

    def _detach(self, loc: DiskLocation, vm: str, record: RecordWrite | None) -> bool:
        """Detach from ``vm`` (recovery, with none: from whoever holds the disk), with the
        record sent beside the reconfigure where given; whether a disk was detached (and so
        the record written)."""
        ds = self.inventory.datastore(loc.datastore)
        path = ds_path(ds.name, loc.descriptor_path)
        if vm:
            found = self.inventory.vm(vm)
            targets = [found] if found else []  # a VM that is gone holds nothing
        else:  # recovery: detach from whoever holds it
            targets = [t for t in (self.inventory.vm(name) for name, devs in
                                   self.inventory.devices_of_vms_on(ds).values()
                                   if devices.find_disk(devs, path)) if t]
        detached = False
        for target in targets:
            with self._vm_locks.hold(target.ref._moId):
                disk = devices.find_disk(self._devices(target), path)
                if disk is None:
                    continue  # not attached: detach is idempotent
                what = f"detaching {path} from VM {target.name}"
                if record is None:
                    self._reconfigure(target, [devices.remove_disk_spec(disk)], what)
                else:
                    _, failed = self._reconfigure_recorded(
                        target, [devices.remove_disk_spec(disk)], what, loc, record,
                        record.make(None), read_devices=False)
                    if failed is not None:
                        raise failed  # detached; the record still says attached
                    record = None  # written
                detached = True
        return detached

    def is_attached(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> bool:
        ds = self.inventory.datastore(loc.datastore)
        path = ds_path(ds.name, loc.descriptor_path)
        if not vm and attach_info is None:
            using = self.inventory.devices_of_vms_on(ds)
            return bool(devices.holders(dict(using.values()), path))
        found = self.inventory.vm(vm)
        if found is None:
            # A VM this endpoint does not know: with one service per ESXi host, another
            # host's VM, whose service alone can tell. Saying "not attached" would let this
            # host's recovery mark a disk in use elsewhere detached; an attach elsewhere
            # still takes over from a VM that is not running (vm_powered_on).
            log.info("VM %s holding %s is not known here; leaving it attached", vm, path)
            return True
        return devices.find_disk(self._devices(found), path) is not None

    def release_orphans(self, datastore: str) -> int:
        return 0  # a VMFS/vSAN/NFS disk in use by a VM cannot be deleted: no orphans

    def vm_powered_on(self, vm: str) -> bool:
        found = self.inventory.vm_properties(vm, ["runtime.powerState"])
        if found is None:
            return False  # a VM that no longer exists runs nothing
        return found[1].get("runtime.powerState") == vim.VirtualMachine.PowerState.poweredOn

