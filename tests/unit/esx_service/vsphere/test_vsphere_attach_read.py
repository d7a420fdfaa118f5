"""Attach reads the reconfigure's end and the VM's devices in one PropertyCollector read
(issue 15). vcsim runs a task before it answers the call, so that read always shows the new
disk there; a real server's read may come from just before the task's end. What the backend
does then is covered here only, on a scripted session: it reads the devices once more."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pyVmomi import vim

from esx_service.backends.base import DiskLocation
from esx_service.backends.vsphere import VsphereBackend
from esx_service.vsphere.inventory import VmRef
from esx_service.vsphere.tasks import TaskEnd

LOC = DiskLocation("ds1", "_DEFAULT", "db")
PATH = "[ds1] dockvols/_DEFAULT/db.vmdk"
CONTROLLER = vim.vm.device.ParaVirtualSCSIController(
    key=1000, busNumber=0, slotInfo=vim.vm.device.VirtualDevice.PciBusSlotInfo(
        pciSlotNumber=160))
DISK = vim.vm.device.VirtualDisk(
    key=2001, controllerKey=1000, unitNumber=1,
    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=PATH))


class Session:
    endpoint = "vc.example:443"

    def __init__(self, in_combined_read: bool) -> None:
        self.in_combined_read = in_combined_read
        self.device_reads = 0
        self.uuid_queries = 0
        self.disk_manager = SimpleNamespace(QueryVirtualDiskUuid=self._query)

    def _query(self, **_: Any) -> str:
        self.uuid_queries += 1
        return "60 00 c2 90 00 00 00 00-00 00 00 00 00 00 00 01"

    def invoke(self, call: Any, idempotent: bool = False) -> Any:
        return call()

    def wait_all(self, tasks: list, what: str, also: Any = None) -> tuple[list, list]:
        devices = [CONTROLLER, DISK] if self.in_combined_read else [CONTROLLER]
        return [TaskEnd()], [{"config.hardware.device": devices}]

    def retrieve_one(self, obj: Any, paths: list[str]) -> dict:
        self.device_reads += 1
        return {"config.hardware.device": [CONTROLLER, DISK]}


class Inventory:
    def __init__(self) -> None:
        self.vm_ref = SimpleNamespace(_moId="vm-1", ReconfigVM_Task=lambda spec: "task")

    def datastore(self, name: str) -> Any:
        return SimpleNamespace(name="ds1")

    def datacenter(self) -> tuple[str, str]:
        return "dc-ref", "DC0"

    def vm(self, name: str) -> VmRef:
        return VmRef(name="vm1", ref=self.vm_ref, home_datastore="ds1")  # type: ignore[arg-type]

    def devices_of_vms_on(self, datastore: Any, also: Any = None) -> dict:
        return {"vm-1": ("vm1", [CONTROLLER])}


def _backend(session: Session) -> VsphereBackend:
    backend = VsphereBackend(session)  # type: ignore[arg-type]
    backend.inventory = Inventory()  # type: ignore[assignment]
    return backend


def test_the_new_disk_in_the_combined_read_needs_no_second_read_nor_a_uuid_query():
    session = Session(in_combined_read=True)
    info = _backend(session).attach_disk(LOC, "vm1", False, "persistent",
                                         disk_uuid="6000c290-0000-0000-0000-000000000002")
    assert (session.device_reads, session.uuid_queries) == (0, 0)
    assert info["unit"] == 1 and info["pci_slot"] == 160
    assert info["disk_uuid"] == "6000c290-0000-0000-0000-000000000002"  # as recorded


def test_a_combined_read_from_before_the_tasks_end_is_followed_by_one_more():
    session = Session(in_combined_read=False)
    info = _backend(session).attach_disk(LOC, "vm1", False, "persistent")
    assert session.device_reads == 1 and info["unit"] == 1
    assert session.uuid_queries == 1  # nothing recorded, and no backing.uuid: asked
