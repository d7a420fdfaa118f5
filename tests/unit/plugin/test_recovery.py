"""recovery.recover after a plugin restart, with FakeDockerUsers standing in for Docker."""

from __future__ import annotations

import sys
import types

import pytest

from plugin.errors import DockerUnreachable
from plugin.recovery import DockerUsers, recover, start_recovery
from tests.fakes import FakeDockerUsers

DB = "db@ds1"


def _mounted(rig) -> set[str]:
    return set(rig.mounter.table)


def test_mounted_but_unused_is_unmounted_and_detached(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")  # then every container went away while we were down
    manager = rig.restart()
    report = recover(manager, FakeDockerUsers({}))
    assert report["unmounted"] == 1
    assert _mounted(rig) == set()
    assert rig.backend.holder_of("db") is None
    assert manager.refs.total(DB) == 0


def test_used_but_not_mounted_is_mounted(rig):
    rig.manager.create("db", {})
    manager = rig.restart()
    report = recover(manager, FakeDockerUsers({DB: {"c1", "c2"}}))
    assert report["remounted"] == 1
    assert _mounted(rig) == {rig.target(DB)}
    assert rig.backend.holder_of("db") == "vm1"
    assert manager.refs.ids(DB) == {"recovered:c1": 1, "recovered:c2": 1}


def test_attached_but_not_mounted_and_unused_is_detached(rig):
    rig.manager.create("db", {})
    rig.manager.refs.mark_attached(DB)
    rig.service.attach("vm1", "db")  # a Mount that died between attach and mount
    manager = rig.restart()
    recover(manager, FakeDockerUsers({}))
    assert rig.backend.holder_of("db") is None
    assert not manager.refs.attached_here(DB)


def test_a_disk_another_plugin_on_this_vm_attached_is_left_alone_by_recovery(rig):
    rig.manager.create("db", {})
    rig.service.attach("vm1", "db")  # another plugin on this VM, mounting it right now
    manager = rig.restart()
    assert recover(manager, FakeDockerUsers({}))["detached"] == 0
    assert rig.backend.holder_of("db") == "vm1"


def test_counts_that_disagree_with_docker_are_replaced_by_recovered_ids(rig):
    rig.manager.create("db", {})
    for mount_id in ("m1", "m2", "m3"):
        rig.manager.mount("db", mount_id)
    manager = rig.restart()
    report = recover(manager, FakeDockerUsers({DB: {"c9"}}))
    assert report["recounted"] == 1
    assert manager.refs.ids(DB) == {"recovered:c9": 1}
    assert _mounted(rig) == {rig.target(DB)}
    assert rig.mounter.calls["mount"] == 1  # the existing mount is kept


def test_counts_are_rebuilt_as_containers_even_when_the_totals_agree(rig):
    """Docker may still show a container "running" whose Unmount failed against the dead
    plugin: counting it by container lets the reconcile see it go; its old ID would stay."""
    rig.manager.create("db", {})
    rig.manager.mount("db", "m1")
    rig.manager.mount("db", "m2")
    manager = rig.restart()
    recover(manager, FakeDockerUsers({DB: {"c1", "c2"}}))
    assert manager.refs.ids(DB) == {"recovered:c1": 1, "recovered:c2": 1}
    manager.recovered.set()
    manager.unmount("db", "m1")  # the pre-restart IDs still release, one user each
    manager.unmount("db", "m2")
    assert _mounted(rig) == set()


def test_an_unknown_unmount_id_after_recovery_is_one_recovered_user_leaving(rig):
    rig.manager.create("db", {})
    rig.manager.mount("db", "m-before-restart")
    docker = FakeDockerUsers({DB: {"c1", "c2"}})
    manager = rig.restart(users=docker)
    recover(manager, docker)
    manager.recovered.set()

    # c1 stops; Docker still shows it running while its Unmount (an ID we never saw) runs
    manager.unmount("db", "id-of-c1")
    assert manager.refs.total(DB) == 1
    assert _mounted(rig) == {rig.target(DB)}

    manager.unmount("db", "id-of-c2")
    assert manager.refs.total(DB) == 0
    assert _mounted(rig) == set()
    assert rig.backend.holder_of("db") is None


def test_the_restart_sequence_of_issue_10_counts_no_container_twice(rig):
    """A and C use v; the plugin dies; C stops meanwhile; the plugin restarts; B mounts v;
    A stops; B stops: v must be unmounted and detached."""
    rig.manager.create("v", {})
    rig.manager.mount("v", "idA")
    rig.manager.mount("v", "idC")
    docker = FakeDockerUsers({"v@ds1": {"A"}})
    manager = rig.restart(users=docker)  # C's Unmount never reached the dead plugin
    recover(manager, docker)
    manager.recovered.set()
    manager.mount("v", "idB")
    docker.users["v@ds1"] = {"A", "B"}
    manager.unmount("v", "idA")  # A still "running" in Docker's view during its Unmount
    assert manager.refs.total("v@ds1") == 1
    docker.users["v@ds1"] = {"B"}
    manager.unmount("v", "idB")
    assert _mounted(rig) == set()
    assert rig.backend.holder_of("v") is None
    assert manager.refs.total("v@ds1") == 0


def test_one_failing_volume_does_not_stop_the_others(rig):
    rig.manager.create("aaa", {})
    rig.manager.create("bbb", {})
    rig.service.attach("vm-other", "aaa")  # cannot be mounted here
    manager = rig.restart()
    report = recover(manager, FakeDockerUsers({"aaa@ds1": {"c1"}, "bbb@ds1": {"c2"}}))
    assert report["remounted"] == 1
    assert _mounted(rig) == {rig.target("bbb@ds1")}


def test_start_recovery_retries_until_docker_answers_then_opens_the_gate(rig):
    rig.manager.create("db", {})
    docker = FakeDockerUsers({DB: {"c1"}})
    manager = rig.restart(users=docker)
    docker.fail_times = 1
    assert not manager.recovered.is_set()
    start_recovery(manager, docker, deadline=30).join(10)
    assert manager.recovered.is_set()
    assert docker.queries == 2
    assert manager.users is docker
    assert _mounted(rig) == {rig.target(DB)}


def test_start_recovery_gives_up_after_the_deadline_but_opens_the_gate(rig):
    manager = rig.restart()
    docker = FakeDockerUsers()
    docker.fail_times = 100
    start_recovery(manager, docker, deadline=0).join(10)
    assert manager.recovered.is_set()


class _BuggyDockerUsers(FakeDockerUsers):
    def by_volume(self):
        self.queries += 1
        raise KeyError("Mounts")  # a bug, not Docker starting


def test_start_recovery_does_not_retry_a_bug_as_waiting_for_docker(rig, caplog):
    manager = rig.restart()
    docker = _BuggyDockerUsers()
    start_recovery(manager, docker, deadline=30).join(10)
    assert manager.recovered.is_set()  # serves with the persisted counts
    assert docker.queries == 1
    assert "recovery failed" in caplog.text and "KeyError" in caplog.text
    assert "waiting for Docker" not in caplog.text


class _FakeDockerApi:
    def __init__(self, containers: list[dict]) -> None:
        self._containers = containers

    def containers(self, all: bool = False) -> list[dict]:
        assert all is True  # paused and restarting containers count too
        return self._containers


@pytest.fixture
def fake_docker_sdk(monkeypatch):
    created = []

    def install(containers: list[dict]) -> list:
        module = types.ModuleType("docker")

        class DockerClient:
            def __init__(self, base_url: str, timeout: int) -> None:
                created.append(base_url)
                self.api = _FakeDockerApi(containers)

        module.DockerClient = DockerClient
        monkeypatch.setitem(sys.modules, "docker", module)
        return created
    return install


def _container(cid: str, state: str, *mounts: dict) -> dict:
    return {"Id": cid, "State": state, "Mounts": list(mounts)}


def _vol(name: str, driver: str = "vsphere") -> dict:
    return {"Type": "volume", "Name": name, "Driver": driver}


def test_docker_users_counts_live_containers_of_this_driver(rig, fake_docker_sdk):
    rig.manager.create("db", {})
    rig.manager.create("web@ds2", {})
    created = fake_docker_sdk([
        _container("c1", "running", _vol("db")),
        _container("c2", "exited", _vol("db")),
        _container("c3", "paused", _vol("web@ds2", "myorg/vsphere:latest")),
        _container("c4", "restarting", _vol("db"), _vol("other", "local")),
        _container("c5", "running", {"Type": "bind", "Source": "/x", "Destination": "/y"}),
        _container("c6", "running", _vol("ghost")),
        _container("c7", "created", _vol("db")),
        _container("c8", "running", _vol("db", "vsphere-other")),
    ])
    users = DockerUsers("unix:///fake/docker.sock", "vsphere", rig.manager.canonical)
    assert users.by_volume() == {DB: {"c1", "c4"}, "web@ds2": {"c3"}}
    assert users.users_of(DB) == {"c1", "c4"}
    assert users.users_of("nobody@ds1") == set()
    assert created == ["unix:///fake/docker.sock"]  # one client, made lazily


class _MountsWhileAsked(FakeDockerUsers):
    """Docker answers "no users" while a container's Mount arrives meanwhile."""

    def __init__(self, manager) -> None:
        super().__init__({})
        self._manager = manager

    def by_volume(self):
        answer = super().by_volume()
        self._manager.mount("db", "late-container")
        return answer


def test_a_mount_that_arrives_during_recovery_is_left_mounted(rig):
    rig.manager.create("db", {})
    manager = rig.restart()
    report = recover(manager, _MountsWhileAsked(manager))
    assert report["unmounted"] == 0
    assert _mounted(rig) == {rig.target(DB)}
    assert manager.refs.ids(DB) == {"late-container": 1}


def test_a_volume_mounted_by_dockerd_before_recovery_looked_is_left_mounted(rig):
    # the Mount came before recovery's snapshots; Docker still showed the container 'created'
    rig.manager.create("db", {})
    manager = rig.restart()
    manager.mount("db", "m-during-recovery")
    report = recover(manager, FakeDockerUsers({}))
    assert report["unmounted"] == 0
    assert _mounted(rig) == {rig.target(DB)}
    assert manager.refs.ids(DB) == {"m-during-recovery": 1}


def test_docker_users_says_docker_is_unreachable_when_nothing_listens(rig):
    users = DockerUsers("unix:///nonexistent/docker.sock", "vsphere", rig.manager.canonical)
    with pytest.raises(DockerUnreachable, match="cannot be asked"):
        users.by_volume()
