"""Growing a vsphere disk, where vcsim cannot prove it.

vcsim 0.24 has no ExtendVirtualDisk_Task, so the detached path is checked here on a fake
session: what the backend sends, and that it sends nothing for a disk already that big.
These are spec tests, not proof against a server. The attached path (ReconfigVM_Task with an
edited VirtualDisk) is proven on vcsim in tests/integration/vsphere/test_vsphere_backend.py;
its spec builder's never-shrink rule is checked here."""

from __future__ import annotations

import fnmatch
from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from esx_service.backends.base import DiskLocation
from esx_service.backends.vsphere import VsphereBackend
from esx_service.vsphere import devices

LOC = DiskLocation("ds1", "_DEFAULT", "db")


class FakeSession:
    endpoint = "esx.example:443"

    def __init__(self, capacity_kb: int | None, file: str = "db.vmdk") -> None:
        self.calls: list[tuple[str, dict]] = []
        self.capacity_kb = capacity_kb
        self.file = file  # the descriptor's name on the datastore
        self.disk_manager = SimpleNamespace(ExtendVirtualDisk_Task=self._extend)
        self.browser = SimpleNamespace(SearchDatastore_Task=self._search)

    def _extend(self, **kwargs: Any) -> str:
        self.calls.append(("ExtendVirtualDisk_Task", kwargs))
        return "task"

    def _search(self, **kwargs: Any) -> Any:
        self.calls.append(("SearchDatastore_Task", kwargs))
        matches = any(fnmatch.fnmatchcase(self.file, pattern)
                      for pattern in kwargs["searchSpec"].matchPattern)
        found = [vim.host.DatastoreBrowser.VmDiskInfo(path=self.file,
                                                      capacityKb=self.capacity_kb)]
        return vim.host.DatastoreBrowser.SearchResults(
            file=found if self.capacity_kb and matches else [])

    def invoke(self, call: Any) -> Any:
        return call()

    def wait(self, task: Any, what: str) -> Any:
        return task


class FakeInventory:
    def __init__(self, session: FakeSession) -> None:
        self.ds = SimpleNamespace(name="ds1", browser=session.browser)

    def datastore(self, name: str) -> Any:
        return self.ds

    def datacenter(self) -> tuple[str, str]:
        return "dc-ref", "DC0"

    def devices_of_vms_on(self, datastore: Any, also: Any = None) -> dict:
        return {}  # attached nowhere


def backend_with(session: FakeSession) -> VsphereBackend:
    backend = VsphereBackend(session)  # type: ignore[arg-type]
    backend.inventory = FakeInventory(session)  # type: ignore[assignment]
    return backend


@pytest.mark.parametrize("known_kb", [100 * 1024, None])
def test_a_detached_disk_is_extended_with_extend_virtual_disk(known_kb):
    session = FakeSession(capacity_kb=known_kb)
    backend_with(session).grow_disk(LOC, 300, None)
    [extend] = [kw for name, kw in session.calls if name == "ExtendVirtualDisk_Task"]
    assert extend == {"name": "[ds1] dockvols/_DEFAULT/db.vmdk", "datacenter": "dc-ref",
                      "newCapacityKb": 300 * 1024, "eagerZero": False}


@pytest.mark.parametrize("known_kb", [300 * 1024, 400 * 1024])
@pytest.mark.parametrize("loc,file", [(LOC, "db.vmdk"),
                                      (DiskLocation("ds1", "_DEFAULT", "my db"),
                                       "my~20db.vmdk")])
def test_a_detached_disk_already_that_big_is_left_alone(known_kb, loc, file):
    # a name with an encoded file stem is looked up under that stem (it was looked up as
    # typed, found nothing, and the grow was sent again to a disk already that big)
    session = FakeSession(capacity_kb=known_kb, file=file)
    backend_with(session).grow_disk(loc, 300, None)
    assert [name for name, _ in session.calls] == ["SearchDatastore_Task"]


def _disk(capacity_kb: int) -> vim.vm.device.VirtualDisk:
    return vim.vm.device.VirtualDisk(key=2001, controllerKey=1000, unitNumber=1,
                                     capacityInKB=capacity_kb,
                                     capacityInBytes=capacity_kb * 1024)


def test_the_grow_spec_edits_the_attached_disk_to_the_new_capacity():
    spec = devices.grow_disk_spec(_disk(100 * 1024), 300)
    assert spec is not None and spec.operation == "edit"
    assert (spec.device.key, spec.device.capacityInKB, spec.device.capacityInBytes) == (
        2001, 300 * 1024, 300 * 1024 * 1024)
    assert spec.fileOperation is None  # the file is edited, never created or replaced


@pytest.mark.parametrize("current_mb", [300, 500])
def test_the_grow_spec_is_none_for_a_disk_already_that_big_never_a_shrink(current_mb):
    assert devices.grow_disk_spec(_disk(current_mb * 1024), 300) is None
