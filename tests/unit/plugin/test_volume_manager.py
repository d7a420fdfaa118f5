"""VolumeManager with FakeMounter/FakeDeviceFinder and a FakeEsxClient backed by a real
VolumeService on a FakeBackend."""

from __future__ import annotations

import json

import pytest

from esx_service.backends.base import DiskLocation
from esx_service.errors import VolumeNotFound
from plugin.errors import (
    DeviceError,
    FilesystemError,
    RecoveryPending,
    ServiceError,
    ServiceUnreachable,
    VolumeInUse,
)
from plugin.refcounts import RefCounts
from tests.fakes import FakeDockerUsers


def _attached_to(rig, name: str = "db") -> str | None:
    return rig.service.get("vm1", name)["attached_to"]


def test_create_makes_the_volume_with_its_options(rig):
    rig.manager.create("db", {"size": "2gb", "fstype": "xfs"})
    view = rig.service.get("vm1", "db")
    assert (view["capacity_mb"], view["fstype"]) == (2048, "xfs")


def test_create_with_bad_options_is_a_service_error(rig):
    with pytest.raises(ServiceError) as err:
        rig.manager.create("db", {"size": "huge"})
    assert err.value.code == "InvalidOption"


def test_first_mount_attaches_formats_and_mounts(rig):
    rig.manager.create("db", {"fstype": "ext4"})
    target = rig.manager.mount("db", "m1")
    assert target == rig.target("db@ds1")
    assert rig.mounter.table[target]["fstype"] == "ext4"
    assert rig.mounter.table[target]["read_only"] is False
    assert rig.mounter.mkfs_log == [(rig.mounter.table[target]["device"], "ext4", "db")]
    assert _attached_to(rig) == "vm1"


def test_n_mount_ids_share_one_attach_and_one_mount(rig):
    rig.manager.create("db", {})
    targets = {rig.manager.mount("db", f"m{i}") for i in range(5)}
    assert targets == {rig.target("db@ds1")}
    assert rig.backend.calls["attach_disk"] == 1
    assert rig.mounter.calls["mount"] == 1
    assert rig.manager.refs.total("db@ds1") == 5


def test_unmount_keeps_the_volume_until_the_last_id_goes(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.mount("db", "m2")
    rig.manager.unmount("db", "m1")
    assert rig.target("db@ds1") in rig.mounter.table
    assert _attached_to(rig) == "vm1"
    rig.manager.unmount("db", "m2")
    assert rig.mounter.table == {}
    assert _attached_to(rig) is None
    assert rig.backend.holder_of("db") is None


def test_the_same_id_mounted_twice_needs_two_unmounts(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.mount("db", "m1")
    rig.manager.unmount("db", "m1")
    assert rig.target("db@ds1") in rig.mounter.table
    rig.manager.unmount("db", "m1")
    assert rig.mounter.table == {}


def test_an_unmount_of_an_unknown_id_is_ignored(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.unmount("db", "never-mounted")
    assert rig.target("db@ds1") in rig.mounter.table
    assert rig.manager.refs.total("db@ds1") == 1


def test_an_unknown_unmount_releases_a_mount_whose_counts_were_lost(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.refs.replace("db@ds1", {})  # the refcount file was lost
    rig.restart(users=FakeDockerUsers({})).recovered.set()  # and Docker says nobody uses it
    rig.manager.unmount("db", "m1")
    assert rig.target("db@ds1") not in rig.mounter.table
    assert _attached_to(rig) is None


def test_an_unknown_unmount_keeps_a_mount_docker_still_uses(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.refs.replace("db@ds1", {})
    rig.restart(users=FakeDockerUsers({"db@ds1": {"c1"}})).recovered.set()
    rig.manager.unmount("db", "m1")
    assert rig.target("db@ds1") in rig.mounter.table
    assert _attached_to(rig) == "vm1"


def test_mkfs_runs_only_on_first_use(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.unmount("db", "m1")
    rig.manager.mount("db", "m2")
    assert rig.mounter.calls["mkfs"] == 1
    assert rig.mounter.calls["mount"] == 2


def test_the_disks_own_filesystem_wins_over_the_requested_one(rig):
    rig.manager.create("db", {"fstype": "ext4"})
    device = rig.service.attach("vm1", "db")["attach"]["device"]
    rig.service.detach("vm1", "db")
    rig.mounter.filesystems[device] = "xfs"  # formatted elsewhere
    target = rig.manager.mount("db", "m1")
    assert rig.mounter.table[target]["fstype"] == "xfs"
    assert rig.mounter.calls["mkfs"] == 0


def test_a_read_only_volume_is_mounted_read_only(rig):
    rig.manager.create("ro", {"access": "read-only"})
    target = rig.manager.mount("ro", "m1")
    assert rig.mounter.table[target]["read_only"] is True
    assert rig.mounter.calls["mkfs"] == 1  # a fresh read-only volume still gets formatted
    rig.manager.unmount("ro", "m1")
    rig.manager.mount("ro", "m2")
    assert rig.mounter.table[target]["read_only"] is True
    assert rig.mounter.calls["mkfs"] == 1
    # once formatted, the disk itself is attached read-only
    assert rig.backend.attached[("ds1", "_DEFAULT", "ro")][1]["read_only"] is True


def _no_longer_blank(rig, name: str = "db") -> None:
    """As after an attach whose Mount never reported a filesystem: the guest probes."""
    loc = DiskLocation("ds1", "_DEFAULT", name)
    rig.backend.write_metadata(loc, {**rig.backend.read_metadata(loc), "blank": False})


@pytest.mark.parametrize("failing", ["mount", "mkfs", "filesystem_of"])
def test_a_failed_mount_detaches_again_and_counts_nothing(rig, failing):
    rig.manager.create("db", {})
    if failing == "filesystem_of":
        _no_longer_blank(rig)
    rig.mounter.fail[failing] = FilesystemError(f"{failing} failed")
    with pytest.raises(FilesystemError):
        rig.manager.mount("db", "m1")
    assert _attached_to(rig) is None
    assert rig.backend.holder_of("db") is None
    assert rig.manager.refs.total("db@ds1") == 0
    assert rig.mounter.table == {}
    rig.manager.mount("db", "m2")  # and a retry works
    assert rig.manager.refs.total("db@ds1") == 1


def test_a_device_that_never_shows_up_detaches_again(rig):
    rig.manager.create("db", {})
    rig.devices.fail = DeviceError("disk did not appear within 30s")
    with pytest.raises(DeviceError):
        rig.manager.mount("db", "m1")
    assert _attached_to(rig) is None


def test_mount_of_a_volume_attached_elsewhere_is_refused_naming_the_vm(rig):
    rig.manager.create("db", {})
    rig.service.attach("vm-other", "db")
    with pytest.raises(ServiceError) as err:
        rig.manager.mount("db", "m1")
    assert err.value.code == "VolumeInUse" and "vm-other" in err.value.message
    assert rig.manager.refs.total("db@ds1") == 0


def test_mount_of_a_missing_volume_is_not_found(rig):
    with pytest.raises(ServiceError) as err:
        rig.manager.mount("ghost", "m1")
    assert err.value.code == "VolumeNotFound"


def test_a_failed_umount_keeps_the_reference(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.mounter.fail["umount"] = FilesystemError("target is busy")
    with pytest.raises(FilesystemError):
        rig.manager.unmount("db", "m1")
    assert rig.manager.refs.total("db@ds1") == 1
    assert _attached_to(rig) == "vm1"
    rig.manager.unmount("db", "m1")  # the retry finishes the job
    assert rig.mounter.table == {} and _attached_to(rig) is None


def test_a_detach_that_fails_after_the_last_umount_is_finished_by_the_next_remove(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.client.unreachable = True
    with pytest.raises(ServiceUnreachable):
        rig.manager.unmount("db", "m1")
    assert rig.mounter.table == {}  # unmounted: nothing left to count
    assert rig.manager.refs.total("db@ds1") == 0
    assert rig.backend.holder_of("db") == "vm1"
    state = _state_on_disk(rig)
    assert state["refs"] == {}  # the release is written although the detach failed...
    assert state["attached"] == ["db@ds1"]  # ...and the disk is still attached here
    rig.client.unreachable = False
    rig.manager.remove("db")
    assert rig.service.list("vm1") == []


def test_a_detach_that_fails_after_the_last_umount_is_reused_by_the_next_mount(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.client.unreachable = True
    with pytest.raises(ServiceUnreachable):
        rig.manager.unmount("db", "m1")
    rig.client.unreachable = False
    assert rig.manager.mount("db", "m2") == rig.target("db@ds1")
    assert rig.backend.calls["attach_disk"] == 1  # the idempotent attach found it attached
    assert rig.manager.refs.ids("db@ds1") == {"m2": 1}


def test_unmount_tolerates_a_volume_removed_behind_our_back(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.service.detach("vm1", "db")
    rig.service.remove("vm1", "db")
    rig.manager.unmount("db", "m1")
    assert rig.mounter.table == {}
    assert rig.manager.refs.total("db@ds1") == 0


def test_remove_of_a_volume_in_use_is_refused(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    with pytest.raises(VolumeInUse, match="1 mount"):
        rig.manager.remove("db")
    assert rig.service.get("vm1", "db")["name"] == "db@ds1"
    rig.manager.unmount("db", "m1")
    rig.manager.remove("db")
    with pytest.raises(VolumeNotFound):
        rig.service.get("vm1", "db")


def test_remove_is_refused_until_recovery_is_done(rig):
    rig.manager.create("db", {})
    rig.manager.recovered.clear()
    with pytest.raises(RecoveryPending, match="recovering"):
        rig.manager.remove("db")
    assert rig.service.get("vm1", "db")["name"] == "db@ds1"
    rig.manager.recovered.set()
    rig.manager.remove("db")
    assert rig.service.list("vm1") == []


def test_remove_forgets_the_volume_in_cache_and_aliases(rig):
    rig.manager.create("db", {})
    rig.manager.get("db")
    rig.manager.remove("db")
    assert rig.manager.cache.all() == {}
    assert rig.manager.refs.alias("db") is None


def test_get_answers_name_status_and_created_at(rig):
    rig.manager.create("db", {"size": "1gb"})
    answer = rig.manager.get("db")
    assert answer["Name"] == "db"
    assert answer["CreatedAt"] == rig.service.get("vm1", "db")["created_at"]
    status = answer["Status"]
    assert status["datastore"] == "ds1"
    assert status["capacity"]["size"] == "1gb"
    assert status["attached to VM"] == "detached"
    assert "stale" not in status
    assert "Mountpoint" not in answer


def test_get_names_the_mountpoint_while_mounted(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    answer = rig.manager.get("db")
    assert answer["Mountpoint"] == rig.target("db@ds1")
    assert answer["Status"]["attached to VM"] == "vm1"


def test_get_of_a_missing_volume_is_an_error(rig):
    with pytest.raises(ServiceError) as err:
        rig.manager.get("ghost")
    assert err.value.code == "VolumeNotFound"


def test_get_is_served_from_the_cache_marked_stale_when_the_service_is_unreachable(rig):
    rig.manager.create("db", {"size": "1gb"})
    rig.manager.get("db")
    rig.client.unreachable = True
    answer = rig.manager.get("db")
    assert answer["Name"] == "db"
    assert answer["Status"]["capacity"]["size"] == "1gb"
    assert "unreachable" in answer["Status"]["stale"]


def test_the_cache_survives_a_plugin_restart(rig):
    rig.manager.create("db", {})
    rig.manager.cache.flush()  # what the cache's timer does within its save interval
    rig.client.unreachable = True
    manager = rig.restart()
    assert "stale" in manager.get("db")["Status"]
    assert manager.list() == [{"Name": "db"}]


def test_get_of_an_uncached_volume_while_unreachable_is_an_error(rig):
    rig.client.unreachable = True
    with pytest.raises(ServiceUnreachable):
        rig.manager.get("db")


def test_list_names_every_volume_by_its_docker_name(rig):
    rig.manager.create("db", {})
    rig.manager.create("web@ds2", {})
    rig.manager.mount("db", "m1")
    assert rig.manager.list() == [
        {"Name": "db", "Mountpoint": rig.target("db@ds1")},
        {"Name": "web@ds2"},
    ]


def test_list_is_served_from_the_cache_when_the_service_is_unreachable(rig):
    rig.manager.create("db", {})
    rig.manager.create("web", {})
    rig.manager.list()
    rig.client.unreachable = True
    assert [v["Name"] for v in rig.manager.list()] == ["db", "web"]


def test_list_drops_volumes_the_service_no_longer_has(rig):
    rig.manager.create("db", {})
    rig.manager.create("web", {})
    rig.service.remove("vm1", "web")
    assert rig.manager.list() == [{"Name": "db"}]


def test_path_answers_without_calling_the_service(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.client.unreachable = True
    before = len(rig.client.requests)
    assert rig.manager.path("db") == rig.target("db@ds1")
    assert rig.manager.path("never-heard-of") == ""
    assert len(rig.client.requests) == before


def test_path_of_an_unmounted_volume_is_empty(rig):
    rig.manager.create("db", {})
    assert rig.manager.path("db") == ""


def test_mount_counts_survive_a_plugin_restart(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.mount("db", "m2")
    manager = rig.restart()
    manager.recovered.set()
    manager.unmount("db", "m1")
    assert rig.target("db@ds1") in rig.mounter.table
    manager.unmount("db", "m2")
    assert rig.mounter.table == {}


def test_a_mount_records_the_attach_as_this_plugins_and_the_last_unmount_forgets_it(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    assert rig.manager.refs.attached_here("db@ds1")
    rig.manager.unmount("db", "m1")
    assert not rig.manager.refs.attached_here("db@ds1")


def test_an_attach_the_service_refused_is_not_recorded_as_this_plugins(rig):
    rig.manager.create("db", {})
    rig.service.attach("vm-other", "db")
    with pytest.raises(ServiceError):
        rig.manager.mount("db", "m1")
    assert not rig.manager.refs.attached_here("db@ds1")


def test_an_attach_that_timed_out_stays_recorded_for_recovery(rig):
    rig.manager.create("db", {})
    rig.client.unreachable = True  # the service may still finish the attach
    with pytest.raises(ServiceUnreachable):
        rig.manager.mount("db", "m1")
    assert rig.manager.refs.attached_here("db@ds1")


def test_remove_does_not_detach_a_disk_another_plugin_on_this_vm_attached(rig):
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")  # another plugin on this VM has it mounted
    with pytest.raises(ServiceError) as err:
        rig.manager.remove("db")
    assert err.value.code == "VolumeInUse"
    assert rig.backend.holder_of("db") == "vm1"


def _state_on_disk(rig) -> dict:
    with open(rig.tmp_path / "state" / "refcounts.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("users", [1, 2])
def test_an_unmount_writes_the_state_file_once(rig, monkeypatch, users):
    rig.manager.create("db", {})
    for i in range(users):
        rig.manager.mount("db", f"m{i}")
    writes = []
    real = RefCounts._save
    monkeypatch.setattr(RefCounts, "_save", lambda self: (writes.append(1), real(self))[1])
    rig.manager.unmount("db", "m0")
    assert len(writes) == 1
    state = _state_on_disk(rig)
    assert state["refs"] == ({} if users == 1 else {"db@ds1": {"m1": 1}})
    assert state["attached"] == ([] if users == 1 else ["db@ds1"])


def test_a_blank_disk_is_formatted_without_a_probe_and_any_other_is_probed(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    assert (rig.mounter.calls["filesystem_of"], rig.mounter.calls["mkfs"]) == (0, 1)
    rig.manager.create("logs", {})
    _no_longer_blank(rig, "logs")  # e.g. a Mount that died before its first detach
    rig.manager.mount("logs", "m2")
    assert (rig.mounter.calls["filesystem_of"], rig.mounter.calls["mkfs"]) == (1, 2)
