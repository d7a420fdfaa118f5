from __future__ import annotations

import pytest

from plugin import devices
from plugin.devices import AttachedDeviceFinder
from plugin.errors import DeviceError


def test_a_loop_attach_names_its_device(monkeypatch):
    monkeypatch.setattr(devices.os.path, "exists", lambda p: p == "/dev/loop7")
    assert AttachedDeviceFinder().find({"kind": "loop", "device": "/dev/loop7"}, "db") == \
        "/dev/loop7"


def test_a_loop_device_missing_in_this_guest_is_an_error(monkeypatch):
    monkeypatch.setattr(devices.os.path, "exists", lambda p: False)
    with pytest.raises(DeviceError, match="db@ds1.*'/dev/loop7' does not exist"):
        AttachedDeviceFinder().find({"kind": "loop", "device": "/dev/loop7"}, "db@ds1")


@pytest.mark.parametrize("device", ["/etc/passwd", "/dev/sda", "", None])
def test_only_loop_devices_are_accepted_for_the_loop_kind(monkeypatch, device):
    monkeypatch.setattr(devices.os.path, "exists", lambda p: True)
    with pytest.raises(DeviceError):
        AttachedDeviceFinder().find({"kind": "loop", "device": device}, "db")


@pytest.mark.parametrize("attach", [{}, {"kind": "nvme"}, {"kind": None}])
def test_an_unknown_kind_is_an_error_naming_the_known_ones(attach):
    with pytest.raises(DeviceError, match="expected loop or scsi"):
        AttachedDeviceFinder().find(attach, "db")
