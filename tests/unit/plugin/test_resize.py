"""The plugin's side of a resize, on fakes (FakeBlockDevices plays the kernel's view of each
device): the guest's request grows the mounted filesystem at once; a disk grown while
detached is grown at mount; one grown by an admin while mounted is noticed by the check."""

from __future__ import annotations

import json

import pytest

from plugin.app import create_app
from plugin.errors import FilesystemError, ServiceError
from plugin.grow_check import check_grown

MB = 1024 * 1024


def mounted(rig, name: str = "db", size: str = "100mb", **opts: str) -> tuple[str, str]:
    rig.manager.create(name, {"size": size, **opts})
    target = rig.manager.mount(name, "m1")
    return target, rig.mounter.table[target]["device"]


def test_a_guest_resize_grows_the_mounted_filesystem_at_once(rig):
    target, device = mounted(rig)
    answer = rig.manager.resize("db", "300mb")
    assert answer["Status"]["capacity"]["size"] == "300mb"
    assert answer["Previous"] == "100mb"
    assert answer["Filesystem"] == "ext4 filesystem grown online to fill its 300 mb device"
    assert rig.mounter.grow_log == [(device, target, "ext4")]
    assert rig.blocks.fs[device] == 300 * MB


def test_a_device_that_does_not_show_the_new_size_is_rescanned_first(rig):
    target, device = mounted(rig, fstype="xfs", size="300mb")
    rig.blocks.stale[device] = 300 * MB  # vsphere: the guest sees the old size until a rescan
    answer = rig.manager.resize("db", "1gb")
    assert rig.blocks.rescans == [device]
    assert rig.mounter.grow_log == [(device, target, "xfs")]
    assert "grown online to fill its 1024 mb device" in answer["Filesystem"]


def test_a_guest_resize_of_a_volume_mounted_nowhere_says_when_it_grows(rig):
    rig.manager.create("db", {"size": "100mb"})
    answer = rig.manager.resize("db", "200mb")
    assert answer["Filesystem"] == "the filesystem grows at the next mount"
    assert rig.mounter.grow_log == []


def test_a_guest_resize_refused_by_the_service_changes_nothing(rig):
    mounted(rig, size="200mb")
    with pytest.raises(ServiceError) as err:
        rig.manager.resize("db", "100mb")
    assert err.value.code == "InvalidOption" and "its size is 200mb" in err.value.message
    assert rig.mounter.grow_log == [] and rig.blocks.rescans == []


def test_an_ext4_disk_grown_while_detached_is_grown_offline_before_the_next_mount(rig):
    target, device = mounted(rig)
    rig.manager.unmount("db", "m1")
    rig.service.resize("vm1", "db", "500mb")  # an admin, while nothing is mounted
    rig.manager.mount("db", "m2")
    assert rig.mounter.grow_log == [(device, "", "ext4")]  # unmounted: no CAP_SYS_RESOURCE
    assert rig.blocks.fs[device] == 500 * MB


def test_an_xfs_disk_grown_while_detached_is_grown_right_after_the_next_mount(rig):
    target, device = mounted(rig, size="300mb", fstype="xfs")
    rig.manager.unmount("db", "m1")
    rig.service.resize("vm1", "db", "500mb")
    rig.manager.mount("db", "m2")
    assert rig.mounter.grow_log == [(device, target, "xfs")]
    assert rig.blocks.fs[device] == 500 * MB


def test_a_mount_of_a_volume_that_did_not_grow_runs_no_grow(rig):
    mounted(rig)  # first mount: mkfs fills the device
    rig.manager.unmount("db", "m1")
    rig.manager.mount("db", "m2")
    assert rig.mounter.grow_log == []


def test_a_failed_offline_grow_is_tried_again_once_mounted(rig):
    target, device = mounted(rig)
    rig.manager.unmount("db", "m1")
    rig.service.resize("vm1", "db", "200mb")
    rig.mounter.fail["grow_unmounted"] = FilesystemError("e2fsck -f -p failed (exit 4)")
    assert rig.manager.mount("db", "m2") == target
    assert rig.mounter.grow_log == [(device, target, "ext4")]


def test_a_failed_grow_keeps_the_mount_says_why_and_the_next_mount_retries(rig):
    target, device = mounted(rig, size="300mb", fstype="xfs")
    rig.mounter.fail["grow"] = FilesystemError("xfs_growfs failed (exit 1): busy")
    answer = rig.manager.resize("db", "400mb")
    assert answer["Filesystem"] == ("the disk grew but its filesystem did not: xfs_growfs "
                                    "failed (exit 1): busy; it grows at the next mount")
    assert rig.mounter.table[target]["device"] == device
    assert check_grown(rig.manager) == 0  # not retried every few seconds at this size
    rig.manager.unmount("db", "m1")
    rig.manager.mount("db", "m2")
    assert rig.blocks.fs[device] == 400 * MB


def test_a_guest_resize_after_the_check_failed_at_that_size_says_it_did_not_grow(rig):
    """The periodic check can notice the grown disk between the service's grow and the
    guest's own grow: its failure (no CAP_SYS_RESOURCE) is the answer, not "already fills"."""
    target, device = mounted(rig)
    rig.mounter.fail["grow"] = FilesystemError("growing ext4 on /dev/x online needs "
                                               "CAP_SYS_RESOURCE")
    rig.service.resize("vm1", "db", "400mb")  # the service's half of the guest's request
    assert check_grown(rig.manager) == 0  # the check came first, and failed
    answer = rig.manager.resize("db", "400mb")  # the guest's request then answers
    assert answer["Filesystem"] == ("the disk grew but its filesystem did not: growing ext4 "
                                    "on /dev/x online needs CAP_SYS_RESOURCE; it grows at the "
                                    "next mount")


def test_the_check_notices_an_admins_grow_of_a_mounted_volume_once(rig):
    target, device = mounted(rig)
    rig.blocks.stale[device] = 100 * MB
    rig.service.resize("vm1", "db", "400mb")  # the admin route: the plugin is not called
    assert check_grown(rig.manager) == 1
    assert rig.blocks.rescans == [device]
    assert rig.mounter.grow_log == [(device, target, "ext4")]
    assert check_grown(rig.manager) == 0  # nothing new: no rescan, no grow
    assert len(rig.mounter.grow_log) == 1 and len(rig.blocks.rescans) == 1


def test_after_a_plugin_restart_the_check_grows_each_mounted_filesystem_once(rig):
    target, device = mounted(rig)
    rig.service.resize("vm1", "db", "400mb")
    rig.restart().recovered.set()  # killed before it noticed: nothing in memory
    check_grown(rig.manager)  # grows each mounted filesystem once (a no-op if it was full)
    assert rig.blocks.fs[device] == 400 * MB
    assert len(rig.mounter.grow_log) == 1
    check_grown(rig.manager)
    assert len(rig.mounter.grow_log) == 1


def test_a_read_only_mount_is_not_grown(rig):
    rig.manager.create("db", {"size": "100mb"})
    rig.manager.mount("db", "m1")  # formats it
    rig.manager.unmount("db", "m1")
    rig.service.update_options("admin", rig.service._locate("vm1", "db")[1],
                               {"access": "read-only"})
    rig.service.resize("vm1", "db", "200mb")
    rig.manager.mount("db", "m2")
    assert check_grown(rig.manager) == 0
    assert rig.mounter.grow_log == []


def test_status_shows_a_grow_in_progress(rig):
    rig.manager.create("db", {"size": "100mb"})
    loc = rig.service._locate("vm1", "db")[1]
    data = rig.backend.read_metadata(loc)
    data["resize_to"] = 300
    rig.backend.write_metadata(loc, data)
    status = rig.manager.get("db")["Status"]
    assert status["capacity"] == {"size": "100mb", "allocated": "0mb", "growing to": "300mb"}


# -- the plugin's own HTTP route ---------------------------------------------------------
def post(client, body: object) -> tuple[int, dict]:
    response = client.post("/Dockvols.Resize", data=json.dumps(body).encode())
    return response.status_code, response.get_json(force=True)


def test_the_resize_route_answers_the_volume_and_what_happened(rig):
    mounted(rig)
    status, reply = post(create_app(rig.manager).test_client(), {"Name": "db", "Size": "1gb"})
    assert status == 200 and reply["Err"] == ""
    assert reply["Status"]["capacity"]["size"] == "1gb"
    assert "grown online" in reply["Filesystem"]


@pytest.mark.parametrize("body,expected", [
    ({"Name": "db"}, "missing or invalid Size None"),
    ({"Name": "db", "Size": 20}, "missing or invalid Size 20"),
    ({"Size": "1gb"}, "missing or invalid volume Name None"),
    ({"Name": "db", "Size": "50mb"}, "cannot shrink volume db@ds1 to 50mb: its size is 100mb"),
    ({"Name": "ghost", "Size": "1gb"}, "volume ghost@ds1 does not exist"),
])
def test_the_resize_route_refuses_naming_the_value(rig, body, expected):
    rig.manager.create("db", {"size": "100mb"})
    status, reply = post(create_app(rig.manager).test_client(), body)
    assert status == 500 and expected in reply["Err"]
