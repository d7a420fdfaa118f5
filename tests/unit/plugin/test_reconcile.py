"""The periodic reconcile releases what no live container uses, and nothing else."""

from __future__ import annotations

from plugin.errors import DockerUnreachable
from plugin.reconcile import Reconciler
from plugin.recovery import recover
from tests.fakes import FakeClock, FakeDockerUsers

DB = "db@ds1"


def _mounted(rig) -> set[str]:
    return set(rig.mounter.table)


def test_a_mount_for_nobody_is_unmounted_and_detached(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.refs.replace(DB, {})  # counts lost
    report = Reconciler(rig.manager, FakeDockerUsers({})).run_once()
    assert report == {"unmounted": 1}
    assert _mounted(rig) == set()
    assert rig.backend.holder_of("db") is None


def test_a_fresh_mount_without_a_running_container_is_kept_within_the_grace(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")  # docker create / a container not running yet
    assert Reconciler(rig.manager, FakeDockerUsers({}), grace=60).run_once() == {}
    assert _mounted(rig) == {rig.target(DB)}
    assert rig.manager.refs.total(DB) == 1


def test_counts_no_live_container_backs_are_dropped_after_the_grace(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")  # its Unmount failed half-way or never came
    report = Reconciler(rig.manager, FakeDockerUsers({}), grace=0).run_once()
    assert report == {"dropped": 1, "unmounted": 1}
    assert _mounted(rig) == set()
    assert rig.backend.holder_of("db") is None


def test_ids_a_previous_plugin_counted_are_dropped_once_a_second_pass_finds_nobody(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")  # its container exits while the plugin restarts
    manager = rig.restart()  # recovery left the volume alone: dockerd touched it meanwhile
    reconciler = Reconciler(manager, FakeDockerUsers({}), grace=600)
    assert reconciler.run_once() == {}  # a container may still be starting
    assert reconciler.run_once() == {"dropped": 1, "unmounted": 1}
    assert _mounted(rig) == set()


def test_a_volume_docker_uses_is_never_released(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.refs.replace(DB, {})  # counts lost, but c1 runs with it
    report = Reconciler(rig.manager, FakeDockerUsers({DB: {"c1"}}), grace=0).run_once()
    assert report == {"recounted": 1}
    assert _mounted(rig) == {rig.target(DB)}
    assert rig.manager.refs.ids(DB) == {"recovered:c1": 1}


def test_a_late_attach_for_nobody_is_detached(rig):
    rig.manager.create("db", {})
    rig.manager.refs.mark_attached(DB)  # the dead plugin's Mount had asked for the attach
    manager = rig.restart()
    recover(manager, FakeDockerUsers({}))  # recovery ran before the attach finished
    rig.service.attach("vm1", "db")  # the dead plugin's Mount, finished by the service
    report = Reconciler(manager, FakeDockerUsers({})).run_once()
    assert report == {"detached": 1}
    assert rig.backend.holder_of("db") is None


def test_a_disk_another_plugin_on_this_vm_attached_is_left_alone(rig):
    """Two plugins on one VM (a managed one beside `make run`'s, two dockerds): the other
    one's disk, attached and not yet mounted, is not an orphan of this one. Detaching it
    unbound its loop device under the other plugin's e2fsck and mount (EIO)."""
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")  # the other plugin's Mount, between attach and mount
    assert Reconciler(rig.manager, FakeDockerUsers({}), grace=0).run_once() == {}
    assert rig.backend.holder_of("db") == "vm1"


def _device(rig, name: str = "db") -> str:
    return rig.service.get("vm1", name)["attach_info"]["device"]


def test_an_unrecorded_disk_nobody_uses_is_released_after_the_grace_and_not_before(rig, caplog):
    """The attach record went with the state file (not fsynced; an unreadable one starts
    empty): without this the disk stayed attached to this VM for ever, in use for every
    other VM."""
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")  # attached, and nobody here recorded it
    clock = FakeClock()
    reconciler = Reconciler(rig.manager, FakeDockerUsers({}), grace=60, clock=clock)
    assert reconciler.run_once() == {}
    clock.now += 59
    assert reconciler.run_once() == {}
    assert rig.backend.holder_of("db") == "vm1"
    clock.now += 2
    caplog.set_level("INFO", logger="dockvols.reconcile")
    assert reconciler.run_once() == {"abandoned": 1}
    assert rig.backend.holder_of("db") is None
    assert "volume=db@ds1 attached to this VM for 61 s with no attach record" in caplog.text
    assert reconciler.run_once() == {}


def test_a_siblings_disk_mid_attach_within_the_grace_is_left_alone(rig):
    """Another plugin on this VM between its attach and its mount, for less than the grace:
    however many passes see it, it stays."""
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")
    clock = FakeClock()
    reconciler = Reconciler(rig.manager, FakeDockerUsers({}), grace=60, clock=clock)
    for _ in range(30):
        assert reconciler.run_once() == {}
        clock.now += 2
    assert rig.backend.holder_of("db") == "vm1"


def test_an_unrecorded_disk_mounted_anywhere_here_is_never_released(rig):
    """Mounted outside the mount root (another plugin's, an admin's): the whole mount table
    counts; a pass that sees it mounted starts the wait again."""
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")
    rig.mounter.filesystems[_device(rig)] = "ext4"
    rig.mounter.mount(_device(rig), "/elsewhere/db", "ext4", False)
    clock = FakeClock()
    reconciler = Reconciler(rig.manager, FakeDockerUsers({}), grace=60, clock=clock)
    for _ in range(3):
        assert reconciler.run_once() == {}
        clock.now += 100
    rig.mounter.umount("/elsewhere/db")
    assert reconciler.run_once() == {}  # the wait starts now
    clock.now += 30
    assert reconciler.run_once() == {}
    clock.now += 31
    assert reconciler.run_once() == {"abandoned": 1}


def test_an_unrecorded_disk_held_in_another_mount_namespace_is_kept(rig):
    """A managed plugin's mounts are not in this plugin's mount table: the exclusive-open
    probe before releasing sees the device held (EBUSY)."""
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")
    rig.blocks.held.add(_device(rig))
    clock = FakeClock()
    reconciler = Reconciler(rig.manager, FakeDockerUsers({}), grace=60, clock=clock)
    for _ in range(3):
        assert reconciler.run_once() == {}
        clock.now += 100
    assert rig.backend.holder_of("db") == "vm1"
    rig.blocks.held.clear()  # its container stopped, and its plugin is gone
    assert reconciler.run_once() == {"abandoned": 1}


def test_a_disk_whose_record_went_with_a_lost_state_file_is_released_after_the_grace(rig):
    rig.manager.create("db", {})
    rig.manager.refs.mark_attached(DB)  # a Mount asked for the attach; the plugin died
    rig.service.attach("vm1", "db")
    with open(rig.tmp_path / "state" / "refcounts.json", "w") as f:
        f.write("{not json")  # a guest crash left it unreadable
    manager = rig.restart()
    assert manager.refs.lost
    assert recover(manager, FakeDockerUsers({})) == {"unmounted": 0, "remounted": 0,
                                                   "recounted": 0, "detached": 0}
    assert rig.backend.holder_of("db") == "vm1"  # recovery leaves it to the grace
    clock = FakeClock()
    reconciler = Reconciler(manager, FakeDockerUsers({}), grace=60, clock=clock)
    assert reconciler.run_once() == {}
    clock.now += 61
    assert reconciler.run_once() == {"abandoned": 1}
    assert rig.backend.holder_of("db") is None


def test_a_disk_attached_to_another_vm_is_left_alone(rig):
    rig.manager.create("db", {})
    rig.service.attach("vm-other", "db")
    assert Reconciler(rig.manager, FakeDockerUsers({})).run_once() == {}
    assert rig.backend.holder_of("db") == "vm-other"


def test_gone_recovered_users_are_forgotten_and_the_last_unmount_releases(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    docker = FakeDockerUsers({DB: {"A", "B"}})
    manager = rig.restart(users=docker)
    recover(manager, docker)
    manager.recovered.set()
    manager.unmount("db", "idA")  # A leaves (one departure)
    docker.users[DB] = {"B"}
    assert Reconciler(manager, docker).run_once() == {"forgotten": 1}
    assert manager.refs.ids(DB) == {"recovered:B": 1}
    assert manager.refs.total(DB) == 1
    docker.users[DB] = set()
    report = Reconciler(manager, docker).run_once()  # B died and its Unmount was lost
    assert report == {"forgotten": 1, "unmounted": 1}
    assert _mounted(rig) == set()


def test_a_pass_with_docker_down_changes_nothing(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    docker = FakeDockerUsers({})
    docker.fail_times = 1
    try:
        Reconciler(rig.manager, docker, grace=0).run_once()
    except DockerUnreachable:
        pass
    else:
        raise AssertionError("a pass without Docker's view must not go on")
    assert _mounted(rig) == {rig.target(DB)}


def test_each_pass_that_acts_is_reported_for_the_metrics(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.refs.replace(DB, {})
    seen = []
    reconciler = Reconciler(rig.manager, FakeDockerUsers({}),
                            on_report=lambda phase, report: seen.append((phase, report)))
    reconciler.run_once()
    reconciler.run_once()  # nothing left to do: not reported
    assert seen == [("reconcile", {"unmounted": 1})]


def test_a_disk_an_admin_grew_gets_its_mounted_filesystem_grown_by_the_pass(rig):
    rig.manager.create("db", {"size": "100mb"})
    target = rig.manager.mount("db", "m1")
    device = rig.mounter.table[target]["device"]
    rig.service.resize("vm1", "db", "300mb")  # the admin route: the plugin is not called
    report = Reconciler(rig.manager, FakeDockerUsers({DB: {"c1"}})).run_once()
    assert report == {"grown": 1}
    assert rig.mounter.grow_log == [(device, target, "ext4")]
    assert Reconciler(rig.manager, FakeDockerUsers({DB: {"c1"}})).run_once() == {}
