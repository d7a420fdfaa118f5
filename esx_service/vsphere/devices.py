"""Device specs for attach/detach, built apart from executing them (pure functions).

Everything here works on a VM's device list as pyVmomi returns it and returns specs or
answers; nothing talks to a server, so each rule is unit-tested on hand-built lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyVmomi import vim

from ..errors import BackendError, CapacityLimit
from .paths import same_ds_path

MAX_SCSI_BUSES = 4            # a VM has SCSI buses 0-3, whatever the controller type
UNITS_PER_CONTROLLER = 16     # units 0-15 ...
CONTROLLER_UNIT = 7           # ... of which 7 is the controller itself
NEW_CONTROLLER_KEY = -100     # negative keys name devices added within one spec
NEW_DISK_KEY = -101

Device = vim.vm.device.VirtualDevice
DISK_MODES = ("persistent", "independent_persistent")


@dataclass(frozen=True)
class Slot:
    """Where a disk goes; ``new_controller`` is the spec to add first when no PVSCSI
    controller had room."""

    controller_key: int
    bus: int
    unit: int
    new_controller: vim.vm.device.VirtualDeviceSpec | None = None


def pvscsi_controllers(devices: Iterable[Device]) -> list[vim.vm.device.ParaVirtualSCSIController]:
    return sorted((d for d in devices if isinstance(d, vim.vm.device.ParaVirtualSCSIController)),
                  key=lambda c: c.busNumber)


def find_free_slot(devices: list[Device], vm: str = "the VM") -> Slot:
    """The first free unit (0-15, never 7) on a PVSCSI controller, by bus then unit; else a
    new PVSCSI controller on the lowest free SCSI bus; else CapacityLimit (4 buses)."""
    used = {(d.controllerKey, d.unitNumber) for d in devices
            if d.controllerKey is not None and d.unitNumber is not None}
    for controller in pvscsi_controllers(devices):
        for unit in range(UNITS_PER_CONTROLLER):
            if unit != CONTROLLER_UNIT and (controller.key, unit) not in used:
                return Slot(controller.key, controller.busNumber, unit)
    # Any SCSI controller type (LSI Logic, BusLogic, PVSCSI) takes one of the four buses.
    taken = {d.busNumber for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
    free = [bus for bus in range(MAX_SCSI_BUSES) if bus not in taken]
    if not free:
        pv = len(pvscsi_controllers(devices))
        raise CapacityLimit(
            f"no free SCSI slot on {vm}: vSphere's limit of {MAX_SCSI_BUSES} SCSI controllers "
            f"per VM is reached ({pv} PVSCSI, each with every unit 0-15 but 7 taken, "
            f"{UNITS_PER_CONTROLLER - 1} disks each); detach a volume first")
    return Slot(NEW_CONTROLLER_KEY, free[0], 0, new_controller_spec(free[0]))


def new_controller_spec(bus: int) -> vim.vm.device.VirtualDeviceSpec:
    controller = vim.vm.device.ParaVirtualSCSIController(
        key=NEW_CONTROLLER_KEY, busNumber=bus,
        sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing)
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=controller)


def disk_mode(attach_as: str, read_only: bool) -> str:
    """The backing's diskMode. A read-only volume is attached independent-nonpersistent:
    the guest mounts it read-only, and whatever is written anyway lands in a redo log that
    vSphere discards at detach, so the volume's disk itself never changes."""
    if read_only:
        return "independent_nonpersistent"
    if attach_as not in DISK_MODES:
        raise BackendError(f"invalid attach-as {attach_as!r}: allowed are {', '.join(DISK_MODES)}")
    return attach_as


def add_disk_specs(file_name: str, slot: Slot, attach_as: str, read_only: bool,
                   profile_id: str | None = None) -> list[vim.vm.device.VirtualDeviceSpec]:
    """The deviceChange list that hot-adds the existing disk ``file_name`` at ``slot``.
    fileOperation stays unset: the file exists and must be neither created nor replaced."""
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=file_name, diskMode=disk_mode(attach_as, read_only))
    disk = vim.vm.device.VirtualDisk(key=NEW_DISK_KEY, controllerKey=slot.controller_key,
                                     unitNumber=slot.unit, backing=backing)
    spec = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=disk)
    if profile_id:
        spec.profile = [vim.vm.DefinedProfileSpec(profileId=profile_id)]
    return ([slot.new_controller] if slot.new_controller else []) + [spec]


def remove_disk_spec(disk: vim.vm.device.VirtualDisk) -> vim.vm.device.VirtualDeviceSpec:
    """Hot-remove ``disk`` keeping its file (fileOperation unset, never ``destroy``)."""
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=disk)


def grow_disk_spec(disk: vim.vm.device.VirtualDisk,
                   size_mb: int) -> vim.vm.device.VirtualDeviceSpec | None:
    """The edit that grows an attached ``disk`` to ``size_mb`` online, or None when it is
    already that big: a disk is never made smaller (vSphere would refuse it anyway)."""
    size_kb = size_mb * 1024
    current_kb = max(disk.capacityInKB or 0, (disk.capacityInBytes or 0) // 1024)
    if current_kb >= size_kb:
        return None
    disk.capacityInKB = size_kb
    disk.capacityInBytes = size_kb * 1024  # type: ignore[assignment]  # stub says None
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)


def find_disk(devices: Iterable[Device], file_name: str) -> vim.vm.device.VirtualDisk | None:
    """The VM's disk device backed by ``file_name`` (any datastore-path form)."""
    for device in devices:
        if isinstance(device, vim.vm.device.VirtualDisk):
            backing_file = getattr(device.backing, "fileName", None)
            if backing_file and same_ds_path(backing_file, file_name):
                return device
    return None


def holders(devices_by_vm: Mapping[str, Iterable[Device]], file_name: str) -> list[str]:
    """Names of the VMs that have ``file_name`` attached."""
    return sorted(vm for vm, devices in devices_by_vm.items() if find_disk(devices, file_name))


def attach_answer(devices: Iterable[Device], disk: vim.vm.device.VirtualDisk,
                  disk_uuid: str) -> dict:
    """What the guest needs to find the disk: bus/unit for the by-path link, the PCI slot
    of the controller, and the disk UUID (the guest's WWN)."""
    controller = next((d for d in devices if d.key == disk.controllerKey), None)
    slot = getattr(controller, "slotInfo", None)
    return {
        "kind": "scsi",
        "controller_bus": getattr(controller, "busNumber", None),
        "unit": disk.unitNumber,
        "disk_uuid": disk_uuid,
        "pci_slot": getattr(slot, "pciSlotNumber", None),
    }


def foreseen_answer(devices: Iterable[Device], slot: Slot, disk_uuid: str | None) -> dict:
    """``attach_answer`` as it will be once the disk is at ``slot``, known before the
    reconfigure where the controller exists already (a new one's PCI slot is the host's
    to choose: None here, and the record is written again after)."""
    controller = next((d for d in devices if d.key == slot.controller_key), None)
    pci = getattr(getattr(controller, "slotInfo", None), "pciSlotNumber", None)
    return {
        "kind": "scsi",
        "controller_bus": slot.bus,
        "unit": slot.unit,
        "disk_uuid": disk_uuid,
        "pci_slot": pci,
    }


def normalise_uuid(value: str) -> str:
    """``6000c29b-0e7d-331c-1c21-c1f5bc918f4d`` from any of vSphere's spellings
    (``60 00 C2 9b 0e 7d 33 1c-1c 21 c1 f5 bc 91 8f 4d``, upper case, no separators)."""
    digits = "".join(c for c in value.lower() if c in "0123456789abcdef")
    if len(digits) != 32:
        raise BackendError(f"not a disk UUID: {value!r}")
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def vmware_uuid_form(value: str) -> str:
    """The spelling SetVirtualDiskUuid takes: ``60 00 c2 9b 0e 7d 33 1c-1c 21 ...``."""
    digits = normalise_uuid(value).replace("-", "")
    pairs = [digits[i:i + 2] for i in range(0, 32, 2)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])
