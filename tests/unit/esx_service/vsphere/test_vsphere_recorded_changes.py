"""An attach's and a detach's record sent beside the reconfigure, both ends read in one read
(issue 15: 6 round trips each with a kept lease, not 7). vcsim runs every task before it
answers and never fails a reconfigure of a valid disk, so what happens when the two end
differently (the record written back, the attach taken back, the record written again where
the host chose another place) is covered here only, on a scripted session."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from esx_service.backends.base import DiskLocation, RecordWrite
from esx_service.backends.vsphere import VsphereBackend
from esx_service.errors import BackendError, DockvolsError, LeaseLost
from esx_service.vsphere.datastore_files import SentWrite
from esx_service.vsphere.inventory import VmRef
from esx_service.vsphere.tasks import TaskEnd

LOC = DiskLocation("ds1", "_DEFAULT", "db")
PATH = "[ds1] dockvols/_DEFAULT/db.vmdk"
UUID = "6000c290-0000-0000-0000-000000000002"
CONTROLLER = vim.vm.device.ParaVirtualSCSIController(
    key=1000, busNumber=0, slotInfo=vim.vm.device.VirtualDevice.PciBusSlotInfo(
        pciSlotNumber=160))
OTHER_DISK = vim.vm.device.VirtualDisk(
    key=2000, controllerKey=1000, unitNumber=0,
    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName="[ds1] os.vmdk"))


def _disk(unit: int, uuid: str | None = None) -> vim.vm.device.VirtualDisk:
    return vim.vm.device.VirtualDisk(
        key=2001, controllerKey=1000, unitNumber=unit,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=PATH, uuid=uuid))


class Files:
    """The record's writes: sent (with one task each) or written at once."""

    def __init__(self, record_end: TaskEnd, log: list[str]) -> None:
        self.record_end = record_end
        self.log = log
        self.written: list[dict] = []

    def send_write(self, datastore: str, relative: str, data: bytes,
                   fence: Any = None) -> SentWrite:
        self.log.append("record sent")
        record = json.loads(data)

        def finish(ends: list[TaskEnd]) -> None:
            if ends[0].error is not None:
                raise LeaseLost("the lock was taken over; refused")
            self.written.append(record)
        return SentWrite([vim.Task("task-record")], finish)

    def write(self, datastore: str, relative: str, data: bytes, fence: Any = None) -> None:
        self.log.append("record written")
        self.written.append(json.loads(data))


class Session:
    endpoint = "vc.example:443"

    def __init__(self, reconfig_end: TaskEnd, devices_after: list[Any], log: list[str]
                 ) -> None:
        self.reconfig_end = reconfig_end
        self.devices_after = devices_after
        self.log = log
        self.record_end = TaskEnd()
        self.disk_manager = SimpleNamespace(QueryVirtualDiskUuid=self._query)

    def _query(self, **_: Any) -> str:
        raise AssertionError("the UUID is known: no query")

    def invoke(self, call: Any, idempotent: bool = False) -> Any:
        return call()

    def wait_all(self, tasks: list, what: str, also: Any = None) -> tuple[list, list]:
        self.log.append(f"read {'+'.join(t._moId for t in tasks)}")
        ends = [self.reconfig_end if t._moId.startswith("reconfig") else self.record_end
                for t in tasks]
        return ends, ([{"config.hardware.device": self.devices_after}] if also else [])

    def retrieve_one(self, obj: Any, paths: list[str]) -> dict:
        self.log.append("devices")
        return {"config.hardware.device": self.devices_after}

    def wait(self, task: Any, what: str) -> None:
        self.log.append(f"wait {task._moId}")
        if task._moId.startswith("reconfig"):
            if self.reconfig_end.error is not None:
                raise self.reconfig_end.error


class Inventory:
    def __init__(self, log: list[str], before: list[Any]) -> None:
        self.before = before
        self.reconfigures = 0

        def reconfigure(spec: Any) -> vim.Task:
            self.reconfigures += 1
            change = spec.deviceChange[-1].operation
            log.append(f"reconfigure {change}")
            return vim.Task(f"reconfig-{self.reconfigures}")
        self.vm_ref = SimpleNamespace(_moId="vm-1", ReconfigVM_Task=reconfigure)

    def datastore(self, name: str) -> Any:
        return SimpleNamespace(name="ds1")

    def datacenter(self) -> tuple[str, str]:
        return "dc-ref", "DC0"

    def vm(self, name: str) -> VmRef:
        return VmRef(name="vm1", ref=self.vm_ref, home_datastore="ds1")  # type: ignore[arg-type]

    def devices_of_vms_on(self, datastore: Any, also: Any = None) -> dict:
        return {"vm-1": ("vm1", list(self.before))}


def _setup(reconfig_end: TaskEnd, before: list[Any], after: list[Any],
           record_end: TaskEnd | None = None) -> tuple[VsphereBackend, Session, Files, list[str]]:
    log: list[str] = []
    session = Session(reconfig_end, after, log)
    if record_end is not None:
        session.record_end = record_end
    files = Files(session.record_end, log)
    backend = VsphereBackend(session)  # type: ignore[arg-type]
    backend.inventory = Inventory(log, before)  # type: ignore[assignment]
    backend._files = files  # type: ignore[assignment]
    return backend, session, files, log


def _record(state: str) -> RecordWrite:
    return RecordWrite(lambda answer: {"status": state, "attach_info": answer},
                       previous={"status": "before"}, fence=None)


def test_an_attach_reads_the_reconfigure_and_its_record_in_one_read():
    backend, _, files, log = _setup(TaskEnd(), [CONTROLLER, OTHER_DISK],
                                    [CONTROLLER, OTHER_DISK, _disk(1)])
    answer = backend.attach_recorded(LOC, "vm1", False, "persistent", UUID, _record("attached"))
    assert log == ["reconfigure add", "record sent", "read reconfig-1+task-record"]
    assert answer == {"kind": "scsi", "controller_bus": 0, "unit": 1, "disk_uuid": UUID,
                      "pci_slot": 160}
    assert files.written == [{"status": "attached", "attach_info": answer}]  # once


def test_an_attach_the_host_put_elsewhere_has_its_record_written_again():
    # the host says another UUID than the one recorded at create: the guest must look for
    # the host's, and the record must say it
    host_uuid = "6000c290-0000-0000-0000-0000000000ff"
    backend, _, files, log = _setup(TaskEnd(), [CONTROLLER, OTHER_DISK],
                                    [CONTROLLER, OTHER_DISK, _disk(1, uuid=host_uuid)])
    answer = backend.attach_recorded(LOC, "vm1", False, "persistent", UUID, _record("attached"))
    assert answer["disk_uuid"] == host_uuid
    assert log[-1] == "record written"
    assert files.written[-1] == {"status": "attached", "attach_info": answer}


def test_a_failed_attach_whose_record_landed_has_the_record_before_written_back():
    refused = vim.fault.FileLocked(msg="locked by another host")
    backend, _, files, log = _setup(TaskEnd(error=refused), [CONTROLLER], [CONTROLLER])
    with pytest.raises(DockvolsError):
        backend.attach_recorded(LOC, "vm1", False, "persistent", UUID, _record("attached"))
    assert files.written[-1] == {"status": "before"}
    assert log[-1] == "record written"


def test_an_attach_whose_record_was_refused_is_taken_back():
    backend, _, files, log = _setup(TaskEnd(), [CONTROLLER], [CONTROLLER, _disk(1)],
                                    record_end=TaskEnd(error=vim.fault.FileNotFound(file="x")))
    with pytest.raises(LeaseLost):
        backend.attach_recorded(LOC, "vm1", False, "persistent", UUID, _record("attached"))
    assert log[-2:] == ["reconfigure remove", "wait reconfig-2"]  # detached again
    assert files.written == []  # and nothing was written under the lost lease


def test_a_detach_reads_the_reconfigure_and_its_record_in_one_read():
    backend, _, files, log = _setup(TaskEnd(), [], [])
    backend.inventory.before = [CONTROLLER, _disk(1)]  # type: ignore[attr-defined]
    backend.session.devices_after = [CONTROLLER, _disk(1)]  # type: ignore[attr-defined]
    backend.detach_recorded(LOC, "vm1", None, _record("detached"))
    assert log == ["devices", "reconfigure remove", "record sent",
                   "read reconfig-1+task-record"]
    assert files.written == [{"status": "detached", "attach_info": None}]


def test_a_failed_detach_whose_record_landed_has_the_record_before_written_back():
    backend, _, files, log = _setup(TaskEnd(error=vim.fault.TaskInProgress(msg="busy")),
                                    [], [CONTROLLER, _disk(1)])
    with pytest.raises(DockvolsError):
        backend.detach_recorded(LOC, "vm1", None, _record("detached"))
    assert files.written == [{"status": "detached", "attach_info": None}, {"status": "before"}]


def test_a_detach_whose_record_was_refused_stays_done_and_says_so():
    backend, _, files, log = _setup(TaskEnd(), [], [CONTROLLER, _disk(1)],
                                    record_end=TaskEnd(error=vim.fault.FileNotFound(file="x")))
    with pytest.raises(LeaseLost):
        backend.detach_recorded(LOC, "vm1", None, _record("detached"))
    assert backend.inventory.reconfigures == 1  # type: ignore[attr-defined]
    assert files.written == []


def test_a_detach_of_a_disk_the_vm_does_not_have_only_writes_the_record():
    backend, _, files, log = _setup(TaskEnd(), [], [CONTROLLER])
    backend.detach_recorded(LOC, "vm1", None, _record("detached"))
    assert log == ["devices", "record written"]


def test_an_attach_that_shows_no_disk_afterwards_writes_the_record_back():
    backend, _, files, _ = _setup(TaskEnd(), [CONTROLLER], [CONTROLLER])
    with pytest.raises(BackendError, match="shows no such disk"):
        backend.attach_recorded(LOC, "vm1", False, "persistent", UUID, _record("attached"))
    assert files.written[-1] == {"status": "before"}
