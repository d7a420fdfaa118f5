"""Guest-side discovery of a hot-added SCSI disk, on a fake sysfs and /dev laid out like a
real Linux guest's (PVSCSI controller in hot-plug slot 224 at PCI 0000:0b:00.0)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugin import scsi_discovery
from plugin.scsi_discovery import DeviceNotFound, InvalidAttachInfo, find_disk

UUID = "6000c29b-0e7d-331c-1c21-c1f5bc918f4d"
WWN_LINK = "dev/disk/by-id/wwn-0x6000c29b0e7d331c1c21c1f5bc918f4d"
PATH_LINK = "dev/disk/by-path/pci-0000:0b:00.0-scsi-0:0:3:0"


def answer(**over: object) -> dict:
    base = {"kind": "scsi", "controller_bus": 1, "unit": 3, "disk_uuid": UUID, "pci_slot": 224}
    base.update(over)
    return base


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    for host in ("host0", "host1", "host2"):
        (tmp_path / "sys/class/scsi_host" / host).mkdir(parents=True)
        (tmp_path / "sys/class/scsi_host" / host / "scan").write_text("")
    slot = tmp_path / "sys/bus/pci/slots/224"
    slot.mkdir(parents=True)
    (slot / "address").write_text("0000:0b:00\n")
    (tmp_path / "dev/disk/by-id").mkdir(parents=True)
    (tmp_path / "dev/disk/by-path").mkdir(parents=True)
    (tmp_path / "dev/sda").write_text("")  # the boot disk
    (tmp_path / "dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0").symlink_to("../../sda")
    return tmp_path


def appear(guest: Path, link: str, device: str = "sdb") -> None:
    (guest / "dev" / device).write_text("")
    (guest / link).symlink_to(f"../../{device}")


def test_the_disk_is_found_by_its_wwn(guest: Path):
    appear(guest, WWN_LINK)
    assert find_disk(answer(pci_slot=None), timeout=0, root=str(guest)) == str(guest / "dev/sdb")


def test_the_disk_uuid_becomes_the_guest_wwn():
    att = scsi_discovery.ScsiAttachment(1, 3, "60 00 C2 9a-bc", None)
    assert att.wwn == "0x6000c29abc"


def test_the_disk_is_found_by_controller_pci_slot_and_unit(guest: Path):
    appear(guest, PATH_LINK, "sdc")
    assert find_disk(answer(disk_uuid=None), timeout=0, root=str(guest)) == str(guest / "dev/sdc")


def test_every_scsi_host_is_rescanned_first(guest: Path):
    appear(guest, WWN_LINK)
    find_disk(answer(), timeout=0, root=str(guest))
    for host in ("host0", "host1", "host2"):
        assert (guest / "sys/class/scsi_host" / host / "scan").read_text() == "- - -"


def test_a_host_that_refuses_the_rescan_does_not_stop_the_others(guest: Path):
    scan = guest / "sys/class/scsi_host/host1/scan"
    scan.unlink()
    scan.mkdir()  # writing fails (IsADirectoryError), as on a read-only sysfs
    assert scsi_discovery.rescan_scsi_hosts(str(guest)) == ["host0", "host2"]


def test_discovery_waits_for_a_disk_that_appears_late(guest: Path):
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            appear(guest, PATH_LINK)

    found = find_disk(answer(), timeout=30, root=str(guest), sleep=sleep)
    assert found == str(guest / "dev/sdb") and len(sleeps) == 3


def test_a_disk_that_never_appears_times_out_naming_the_disk_and_the_links(guest: Path):
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(DeviceNotFound) as raised:
        find_disk(answer(), timeout=2, root=str(guest), sleep=sleep, clock=lambda: now[0])
    message = str(raised.value)
    assert UUID in message and "unit 3" in message and "within 2s" in message
    assert os.path.join(str(guest), WWN_LINK) in message
    assert os.path.join(str(guest), PATH_LINK) in message
    assert now[0] >= 2


def test_a_missing_pci_slot_in_sysfs_is_reported(guest: Path):
    with pytest.raises(DeviceNotFound, match=r"slots/999/address is missing"):
        find_disk(answer(pci_slot=999), timeout=0, root=str(guest))


def test_another_unit_on_the_same_controller_is_not_taken_for_ours(guest: Path):
    appear(guest, "dev/disk/by-path/pci-0000:0b:00.0-scsi-0:0:4:0")
    with pytest.raises(DeviceNotFound):
        find_disk(answer(disk_uuid=None), timeout=0, root=str(guest))


@pytest.mark.parametrize("bad", [
    {"kind": "loop", "device": "/dev/loop0"},
    answer(unit=7), answer(unit=16), answer(unit="3"),
    answer(disk_uuid=None, pci_slot=None),
])
def test_unusable_attach_answers_are_refused(bad: dict):
    with pytest.raises(InvalidAttachInfo):
        find_disk(bad, timeout=0, root="/nonexistent")


def test_errors_share_one_root_for_the_plugin_to_wrap():
    assert issubclass(DeviceNotFound, scsi_discovery.DiscoveryError)
    assert issubclass(InvalidAttachInfo, scsi_discovery.DiscoveryError)
