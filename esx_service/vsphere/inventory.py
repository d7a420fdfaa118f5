"""Finding things in the vSphere inventory: the datacenter, datastores, VMs and their devices.

Lookups are cached because the volume layer asks for datastores and the caller's VM on
every operation: datastores for a few seconds (free space changes, and a new datastore
should appear without a restart), VM references until the server says they are gone. Every
read is one PropertyCollector round trip, using traversal specs rather than container views
so nothing server-side outlives a session.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from ..errors import ConfigError, UnknownDatastore
from .paths import split_ds_path
from .session import VsphereSession, props_of

PC = vmodl.query.PropertyCollector
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
DATASTORE_PATHS = ["name", "browser", "summary.type", "summary.capacity", "summary.freeSpace",
                   "summary.url", "summary.accessible"]
VM_PATHS = ["name", "config.files.vmPathName"]


@dataclass(frozen=True)
class DatastoreRef:
    name: str
    ref: Any          # vim.Datastore
    browser: Any      # vim.host.DatastoreBrowser
    type: str
    capacity_bytes: int
    free_bytes: int
    url: str
    accessible: bool


@dataclass(frozen=True)
class VmRef:
    name: str
    ref: vim.VirtualMachine
    home_datastore: str | None


class Inventory:
    def __init__(self, session: VsphereSession, datacenter: str | None = None,
                 only_datastores: tuple[str, ...] = (), ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._dc_setting = datacenter
        self._only = {d.lower() for d in only_datastores}
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._dc: tuple[vim.Datacenter, str] | None = None
        self._datastores: tuple[float, list[DatastoreRef]] | None = None
        self._vms: dict[str, VmRef] = {}

    # -- datacenter -------------------------------------------------------------------
    def datacenter(self) -> tuple[vim.Datacenter, str]:
        """The datacenter and its inventory path (``dcPath`` of the /folder interface)."""
        if self._dc is None:
            self._dc = self._find_datacenter()
        return self._dc

    def _find_datacenter(self) -> tuple[vim.Datacenter, str]:
        content = self._session.content
        setting = self._dc_setting
        if setting:
            index = self._session.search_index
            found = self._session.invoke(lambda: index.FindByInventoryPath(setting))
            if isinstance(found, vim.Datacenter):
                return found, setting
        root = content.rootFolder
        children: list[Any] = self._session.invoke(lambda: list(root.childEntity))
        names: dict[str, vim.Datacenter] = {}
        for child in children:
            if isinstance(child, vim.Datacenter):
                names[self._name(child)] = child
        if self._dc_setting:
            raise ConfigError(f"datacenter {self._dc_setting!r} not found at "
                              f"{self._session.endpoint}; top-level datacenters: "
                              f"{', '.join(sorted(names)) or 'none'}")
        if len(names) != 1:
            raise ConfigError(f"{self._session.endpoint} has {len(names)} datacenters "
                              f"({', '.join(sorted(names))}); set the vsphere datacenter "
                              "setting to one of them")
        name, dc = next(iter(names.items()))
        return dc, name

    def _name(self, entity: vim.ManagedEntity) -> str:
        return str(self._session.invoke(lambda: entity.name))

    # -- datastores -------------------------------------------------------------------
    def datastores(self, fresh: bool = False) -> list[DatastoreRef]:
        cached = self._datastores
        if not fresh and cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        dc, _ = self.datacenter()
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=dc, skip=True, selectSet=[
                PC.TraversalSpec(name="dc-ds", type=vim.Datacenter, path="datastore")])],
            propSet=[PC.PropertySpec(type=vim.Datastore, pathSet=DATASTORE_PATHS)])
        found = []
        for obj in self._session.retrieve([spec]):
            p = props_of(obj)
            if self._only and p["name"].lower() not in self._only:
                continue
            found.append(DatastoreRef(
                name=p["name"], ref=obj.obj, browser=p.get("browser"),
                type=p.get("summary.type", ""), capacity_bytes=p.get("summary.capacity", 0),
                free_bytes=p.get("summary.freeSpace", 0), url=p.get("summary.url", ""),
                accessible=bool(p.get("summary.accessible", True))))
        found.sort(key=lambda d: d.name)
        self._datastores = (self._clock(), found)
        return found

    def datastore(self, name: str) -> DatastoreRef:
        for fresh in (False, True):  # a datastore added since the cache was filled
            for ds in self.datastores(fresh):
                if ds.name.lower() == name.lower():
                    return ds
        known = ", ".join(d.name for d in self.datastores()) or "none"
        raise UnknownDatastore(f"unknown datastore {name!r}; known datastores: {known}")

    # -- virtual machines -------------------------------------------------------------
    def vm(self, name: str) -> VmRef | None:
        """The VM called ``name``, or whose BIOS UUID is ``name``; None if there is none."""
        cached = self._vms.get(name)
        if cached is not None:
            return cached
        found = self._find_vm(name)
        if found is not None:
            with self._lock:
                self._vms[name] = found
        return found

    def forget_vm(self, name: str) -> None:
        with self._lock:
            self._vms.pop(name, None)

    def _find_vm(self, name: str) -> VmRef | None:
        dc, _ = self.datacenter()
        if _UUID.match(name):
            index = self._session.search_index
            ref: Any = self._session.invoke(lambda: index.FindByUuid(
                datacenter=dc, uuid=name, vmSearch=True, instanceUuid=False))
            if ref is not None:
                return _vm_ref(ref, self._session.retrieve_one(ref, VM_PATHS))
        # By name: walk the datacenter's VM folder tree (folders nest, vApps hold VMs).
        folders = PC.TraversalSpec(name="folders", type=vim.Folder, path="childEntity",
                                   selectSet=[PC.SelectionSpec(name="folders"),
                                              PC.SelectionSpec(name="vapps")])
        vapps = PC.TraversalSpec(name="vapps", type=vim.VirtualApp, path="vm")
        vm_folder = self._session.invoke(lambda: dc.vmFolder)
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=vm_folder, skip=True, selectSet=[folders, vapps])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PATHS)])
        for obj in self._session.retrieve([spec]):
            props = props_of(obj)
            if props.get("name") == name:
                return _vm_ref(obj.obj, props)
        return None

    def vm_properties(self, name: str, paths: list[str]) -> tuple[VmRef, dict[str, Any]] | None:
        """Properties of the named VM; None if it does not exist (any more)."""
        for _ in (1, 2):
            vm = self.vm(name)
            if vm is None:
                return None
            try:
                return vm, self._session.retrieve_one(vm.ref, paths)
            except vmodl.fault.ManagedObjectNotFound:
                self.forget_vm(name)  # deleted, or re-registered under a new reference
        return None

    def devices_of_vms_on(self, datastore: DatastoreRef, also: vim.VirtualMachine | None = None
                          ) -> dict[str, tuple[str, list[Any]]]:
        """``{moid: (name, devices)}`` of every VM using ``datastore`` (plus ``also``), in one
        round trip: a disk on a datastore can only be attached to VMs that datastore lists.
        Keyed by managed-object id because VM names are unique only within a folder."""
        object_set = [PC.ObjectSpec(obj=datastore.ref, skip=True, selectSet=[
            PC.TraversalSpec(name="ds-vm", type=vim.Datastore, path="vm")])]
        if also is not None:
            object_set.append(PC.ObjectSpec(obj=also, skip=False))
        spec = PC.FilterSpec(objectSet=object_set, propSet=[PC.PropertySpec(
            type=vim.VirtualMachine, pathSet=["name", "config.hardware.device"])])
        result: dict[str, tuple[str, list[Any]]] = {}
        for obj in self._session.retrieve([spec]):
            props = props_of(obj)
            result[obj.obj._moId] = (props.get("name", obj.obj._moId),
                                     list(props.get("config.hardware.device") or []))
        return result


def _vm_ref(ref: Any, props: dict[str, Any]) -> VmRef:
    home = None
    vmx = props.get("config.files.vmPathName")
    if vmx:
        try:
            home = split_ds_path(vmx)[0]
        except ValueError:
            home = None
    return VmRef(name=props.get("name", ref._moId), ref=ref, home_datastore=home)
