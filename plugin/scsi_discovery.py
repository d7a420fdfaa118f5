"""Find, in this guest, the SCSI disk the vsphere backend just hot-added.

The attach answer names the disk two ways, and either is enough:
- its UUID, which the guest sees as the WWN link ``/dev/disk/by-id/wwn-0x<uuid hex>``
  (when the VM has ``disk.EnableUUID = TRUE``);
- its place: the PVSCSI controller's PCI slot number and the unit, which udev links as
  ``/dev/disk/by-path/pci-<pci address>-scsi-0:0:<unit>:0``. The slot number maps to the PCI
  address through ``/sys/bus/pci/slots/<slot>/address``.
PVSCSI reports hot-added disks by itself; a rescan of every SCSI host is cheap insurance for
kernels or controllers that do not. Every path is under ``root`` so tests can use a fake
sysfs and /dev laid out like a real guest's. Standard library only.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("dockvols.plugin.scsi")

DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.1


class DiscoveryError(Exception):
    """The disk could not be found in this guest."""


class InvalidAttachInfo(DiscoveryError):
    """The attach answer is not a usable ``scsi`` answer."""


class DeviceNotFound(DiscoveryError):
    """The disk did not appear within the time allowed."""


@dataclass(frozen=True)
class ScsiAttachment:
    controller_bus: int | None
    unit: int
    disk_uuid: str | None
    pci_slot: int | None

    @classmethod
    def from_answer(cls, answer: dict) -> ScsiAttachment:
        if answer.get("kind") != "scsi":
            raise InvalidAttachInfo(f"not a scsi attach answer: {answer!r}")
        unit = answer.get("unit")
        if not isinstance(unit, int) or not 0 <= unit <= 15 or unit == 7:
            raise InvalidAttachInfo(f"scsi attach answer has no valid unit (0-15, not 7): "
                                    f"{answer!r}")
        disk_uuid = answer.get("disk_uuid") or None
        pci_slot = answer.get("pci_slot")
        if disk_uuid is None and pci_slot is None:
            raise InvalidAttachInfo(f"scsi attach answer names neither disk_uuid nor pci_slot, "
                                    f"so the disk cannot be identified: {answer!r}")
        return cls(answer.get("controller_bus"), unit, disk_uuid,
                   pci_slot if isinstance(pci_slot, int) else None)

    @property
    def wwn(self) -> str | None:
        """``0x6000c29...``: the UUID's hex digits, as Linux names VMware disks by id."""
        if not self.disk_uuid:
            return None
        return "0x" + re.sub(r"[^0-9a-fA-F]", "", self.disk_uuid).lower()

    def describe(self) -> str:
        return (f"disk {self.disk_uuid or '(no uuid)'} on SCSI bus {self.controller_bus} "
                f"unit {self.unit}")


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def rescan_scsi_hosts(root: str = "/") -> list[str]:
    """Ask every SCSI host to scan all channels/targets/LUNs; returns the hosts asked.
    A host that refuses (e.g. a read-only sysfs in a container) is logged and skipped."""
    asked = []
    for scan in sorted(glob.glob(_under(root, "/sys/class/scsi_host/host*/scan"))):
        try:
            with open(scan, "w", encoding="ascii") as f:
                f.write("- - -")
            asked.append(os.path.basename(os.path.dirname(scan)))
        except OSError as exc:
            log.warning("cannot rescan %s: %s", scan, exc)
    return asked


def pci_address(slot: int, root: str = "/") -> str | None:
    """``0000:03:00.0`` for a VMware PCI slot number, from the hot-plug slot's address."""
    try:
        with open(_under(root, f"/sys/bus/pci/slots/{slot}/address"), encoding="ascii") as f:
            address = f.read().strip()
    except OSError:
        return None
    return address if address.count(":") == 2 and "." in address else f"{address}.0"


def candidate_links(att: ScsiAttachment, root: str = "/") -> list[str]:
    """The /dev links that would name this disk, most specific first."""
    links = []
    if att.wwn:
        links.append(_under(root, f"/dev/disk/by-id/wwn-{att.wwn}"))
    if att.pci_slot is not None:
        address = pci_address(att.pci_slot, root)
        if address:
            links.append(_under(root, f"/dev/disk/by-path/pci-{address}-scsi-0:0:{att.unit}:0"))
    return links


def find_disk(answer: dict, timeout: float = DEFAULT_TIMEOUT, root: str = "/",
              interval: float = POLL_INTERVAL,
              sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> str:
    """The block device (``/dev/sdX``, under ``root``) of the disk in ``answer``; waits up to
    ``timeout`` seconds for udev to create its link, else raises DeviceNotFound."""
    att = ScsiAttachment.from_answer(answer)
    rescan_scsi_hosts(root)
    deadline = clock() + timeout
    while True:
        # Re-computed each round: the PCI slot of a controller added with the disk may
        # itself appear in sysfs only now.
        links = candidate_links(att, root)
        for link in links:
            if os.path.exists(link):
                device = os.path.realpath(link)
                log.info("found %s at %s (via %s)", att.describe(), device, link)
                return device
        if clock() >= deadline:
            looked = ", ".join(links) or "no link (the PCI slot is not in sysfs)"
            if att.pci_slot is not None and not any("by-path" in x for x in links):
                looked += f"; /sys/bus/pci/slots/{att.pci_slot}/address is missing"
            raise DeviceNotFound(f"{att.describe()} did not appear within {timeout:g}s; "
                                 f"looked for {looked}")
        sleep(interval)
