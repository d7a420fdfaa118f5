"""The pure device rules of the vsphere backend: slot choice, specs, disk lookup, UUIDs."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from esx_service.errors import BackendError, CapacityLimit
from esx_service.vsphere import devices
from esx_service.vsphere.paths import ds_path, same_ds_path, split_ds_path

FILE = "[ds1] dockvols/_DEFAULT/db.vmdk"


def pvscsi(key: int, bus: int, pci_slot: int | None = None) -> vim.vm.device.VirtualDevice:
    ctl = vim.vm.device.ParaVirtualSCSIController(key=key, busNumber=bus)
    if pci_slot is not None:
        ctl.slotInfo = vim.vm.device.VirtualDevice.PciBusSlotInfo(pciSlotNumber=pci_slot)
    return ctl


def lsi(key: int, bus: int) -> vim.vm.device.VirtualDevice:
    return vim.vm.device.VirtualLsiLogicController(key=key, busNumber=bus)


def disk(key: int, controller: int, unit: int, file: str = "[ds1] vm/vm.vmdk",
         uuid: str | None = None) -> vim.vm.device.VirtualDisk:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=file, diskMode="persistent",
                                                          uuid=uuid)
    return vim.vm.device.VirtualDisk(key=key, controllerKey=controller, unitNumber=unit,
                                     backing=backing)


def full(controller_key: int, first_key: int) -> list:
    return [disk(first_key + u, controller_key, u, f"[ds1] d/{controller_key}-{u}.vmdk")
            for u in range(16) if u != 7]


def test_first_free_unit_on_the_existing_pvscsi_controller_is_chosen():
    slot = devices.find_free_slot([pvscsi(1000, 0), disk(2000, 1000, 0), disk(2001, 1000, 2)])
    assert (slot.controller_key, slot.bus, slot.unit, slot.new_controller) == (1000, 0, 1, None)


def test_unit_7_is_never_chosen_even_when_it_is_the_only_gap():
    devs = [pvscsi(1000, 0)] + [disk(2000 + u, 1000, u) for u in range(7)]
    assert devices.find_free_slot(devs).unit == 8


def test_a_full_controller_moves_the_disk_to_the_next_pvscsi_controller():
    devs = [pvscsi(1001, 1), pvscsi(1000, 0)] + full(1000, 2000)
    slot = devices.find_free_slot(devs)
    assert (slot.controller_key, slot.bus, slot.unit, slot.new_controller) == (1001, 1, 0, None)


def test_full_controllers_lead_to_a_new_pvscsi_controller_on_the_lowest_free_bus():
    # bus 0 has a full PVSCSI, bus 1 an LSI Logic controller (free units, but not PVSCSI)
    devs = [pvscsi(1000, 0), lsi(1001, 1)] + full(1000, 2000)
    slot = devices.find_free_slot(devs)
    assert slot.new_controller is not None
    new = slot.new_controller.device
    assert isinstance(new, vim.vm.device.ParaVirtualSCSIController)
    assert (new.busNumber, slot.bus, slot.unit) == (2, 2, 0)
    assert slot.controller_key == new.key < 0
    assert slot.new_controller.operation == "add"


def test_a_vm_without_scsi_controller_gets_a_pvscsi_controller_on_bus_0():
    slot = devices.find_free_slot([vim.vm.device.VirtualIDEController(key=200, busNumber=0)])
    assert slot.new_controller is not None and slot.bus == 0


def test_four_full_buses_raise_a_clear_error_naming_the_vm():
    devs = []
    for bus in range(4):
        devs += [pvscsi(1000 + bus, bus)] + full(1000 + bus, 2000 + 100 * bus)
    with pytest.raises(CapacityLimit, match=r"no free SCSI slot on VM web-1.*limit of 4 SCSI "):
        devices.find_free_slot(devs, vm="VM web-1")


def test_add_disk_specs_add_the_new_controller_before_the_disk_on_it():
    slot = devices.find_free_slot([])
    specs = devices.add_disk_specs(FILE, slot, "persistent", read_only=False)
    assert [type(s.device).__name__ for s in specs] == [
        "vim.vm.device.ParaVirtualSCSIController", "vim.vm.device.VirtualDisk"]
    assert specs[1].device.controllerKey == specs[0].device.key


@pytest.mark.parametrize("attach_as,read_only,mode", [
    ("persistent", False, "persistent"),
    ("independent_persistent", False, "independent_persistent"),
    ("persistent", True, "independent_nonpersistent"),
])
def test_add_disk_spec_sets_the_disk_mode_and_never_a_file_operation(attach_as, read_only, mode):
    spec = devices.add_disk_specs(FILE, devices.Slot(1000, 0, 3), attach_as, read_only)[-1]
    assert spec.device.backing.diskMode == mode
    assert spec.device.backing.fileName == FILE
    assert (spec.device.controllerKey, spec.device.unitNumber) == (1000, 3)
    assert spec.fileOperation is None  # the file exists: neither create nor replace it


def test_add_disk_spec_refuses_an_unknown_attach_mode():
    with pytest.raises(BackendError, match="independent_persistent"):
        devices.add_disk_specs(FILE, devices.Slot(1000, 0, 3), "undoable", False)


def test_add_disk_spec_carries_the_storage_policy():
    spec = devices.add_disk_specs(FILE, devices.Slot(1000, 0, 3), "persistent", False,
                                  profile_id="p-1")[-1]
    assert [p.profileId for p in spec.profile] == ["p-1"]


def test_remove_disk_spec_keeps_the_file():
    d = disk(2000, 1000, 1, FILE)
    spec = devices.remove_disk_spec(d)
    assert spec.operation == "remove" and spec.device is d and spec.fileOperation is None


@pytest.mark.parametrize("listed", [
    "[ds1] dockvols/_DEFAULT/db.vmdk", "[ds1]/dockvols/_DEFAULT/db.vmdk",
    "[DS1] dockvols/_DEFAULT/db.vmdk", "[ds1]dockvols/_DEFAULT/db.vmdk"])
def test_find_disk_matches_every_spelling_of_the_datastore_path(listed):
    target = disk(2001, 1000, 1, listed)
    assert devices.find_disk([pvscsi(1000, 0), disk(2000, 1000, 0), target], FILE) is target


def test_find_disk_does_not_match_another_file_or_folder():
    devs = [disk(2000, 1000, 0, "[ds1] dockvols/other/db.vmdk"),
            disk(2001, 1000, 1, "[ds2] dockvols/_DEFAULT/db.vmdk")]
    assert devices.find_disk(devs, FILE) is None


def test_holders_names_every_vm_with_the_disk():
    by_vm = {"a": [disk(1, 1000, 0, FILE)], "b": [disk(1, 1000, 0)], "c": [disk(2, 1000, 1, FILE)]}
    assert devices.holders(by_vm, FILE) == ["a", "c"]


def test_attach_answer_has_bus_unit_pci_slot_and_uuid():
    d = disk(2001, 1001, 4, FILE)
    answer = devices.attach_answer([pvscsi(1000, 0), pvscsi(1001, 1, pci_slot=224), d], d, "u")
    assert answer == {"kind": "scsi", "controller_bus": 1, "unit": 4, "disk_uuid": "u",
                      "pci_slot": 224}


@pytest.mark.parametrize("raw", [
    "60 00 C2 9b 0e 7d 33 1c-1c 21 c1 f5 bc 91 8f 4d",
    "6000C29B-0E7D-331C-1C21-C1F5BC918F4D", "6000c29b0e7d331c1c21c1f5bc918f4d"])
def test_disk_uuids_are_normalised_from_every_vsphere_spelling(raw):
    assert devices.normalise_uuid(raw) == "6000c29b-0e7d-331c-1c21-c1f5bc918f4d"


def test_the_set_uuid_spelling_round_trips():
    spelled = devices.vmware_uuid_form("6000c29b-0e7d-331c-1c21-c1f5bc918f4d")
    assert spelled == "60 00 c2 9b 0e 7d 33 1c-1c 21 c1 f5 bc 91 8f 4d"
    assert devices.normalise_uuid(spelled) == "6000c29b-0e7d-331c-1c21-c1f5bc918f4d"


def test_a_malformed_uuid_is_refused():
    with pytest.raises(BackendError, match="not a disk UUID"):
        devices.normalise_uuid("60 00 c2")


def test_datastore_paths_normalise_vcsim_and_esx_forms():
    assert split_ds_path("[LocalDS_0]/dockvols") == ("LocalDS_0", "dockvols")
    assert split_ds_path("[LocalDS_0] dockvols/g") == ("LocalDS_0", "dockvols/g")
    assert ds_path(*split_ds_path("[ds 1]/a/b.json")) == "[ds 1] a/b.json"
    assert not same_ds_path("not a path", FILE)
    with pytest.raises(ValueError):
        split_ds_path("dockvols/x")
