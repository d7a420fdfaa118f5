"""Turn esx_service's attach answer into a block device path in this guest."""

from __future__ import annotations

import os
from typing import Protocol

from .errors import DeviceError
from .scsi_discovery import DiscoveryError, find_disk


class DeviceFinder(Protocol):
    def find(self, attach: dict, volume: str) -> str: ...

    def find_now(self, attach: dict, volume: str) -> str | None: ...


class AttachedDeviceFinder:
    """``loop``: the local backend names the device. ``scsi``: the vsphere backend names
    controller and unit; the guest waits for the disk to appear."""

    def __init__(self, timeout: float = 30.0, root: str = "/") -> None:
        self.timeout = timeout
        self.root = root

    def find(self, attach: dict, volume: str) -> str:
        kind = attach.get("kind")
        if kind == "loop":
            device = str(attach.get("device", ""))
            if not device.startswith("/dev/loop") or not os.path.exists(device):
                raise DeviceError(f"volume {volume}: attached loop device {device!r} "
                                  "does not exist in this host")
            return device
        if kind == "scsi":
            try:
                return find_disk(attach, timeout=self.timeout, root=self.root)
            except DiscoveryError as exc:
                raise DeviceError(f"volume {volume}: {exc}") from exc
        raise DeviceError(f"volume {volume}: unknown attach kind {kind!r} (expected loop or scsi)")

    def find_now(self, attach: dict, volume: str) -> str | None:
        """The device as this guest shows it now, without waiting; None when it shows none
        (the reconcile's look at a disk some plugin may still be mounting)."""
        try:
            if attach.get("kind") == "scsi":
                return find_disk(attach, timeout=0, root=self.root)
            return self.find(attach, volume)
        except (DeviceError, DiscoveryError):
            return None
