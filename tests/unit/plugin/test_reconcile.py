"""The periodic reconcile releases what no live container uses, and nothing else."""

from __future__ import annotations

from plugin.errors import DockerUnreachable
from plugin.reconcile import Reconciler
from plugin.recovery import recover
from tests.fakes import FakeDockerUsers

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
