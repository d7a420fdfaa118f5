"""Leases through the vSphere file API against vcsim: what a service that reaches datastores
remotely (vCenter, or ESX over the network) uses. MakeDirectory, MoveDatastoreFile, the
datastore browser's modification times and the /folder PUT, with two backends (two
sessions) as two hosts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dockvols_common.instance import Instance
from esx_service.backends.base import DiskLocation
from esx_service.backends.vsphere import VsphereBackend
from esx_service.cluster_locks import ClusterLocks
from esx_service.errors import DiskExists, LeaseLost
from esx_service.lease_store import LeaseStore
from esx_service.leases import LeaseManager
from esx_service.volumes import VolumeService
from esx_service.vsphere.lease_store import HttpLeaseStore
from tests.fakes import FakeClock

from .conftest import Vcsim


@pytest.fixture
def two_hosts(vcsim: Vcsim) -> Iterator[tuple[VsphereBackend, VsphereBackend]]:
    with vcsim.backend(metadata_access="http") as a, \
            vcsim.backend(metadata_access="http") as b:
        yield a, b


def _manager(store: LeaseStore, host: str, clock: FakeClock | None = None) -> LeaseManager:
    extra = {"clock": clock, "sleep": lambda s: None} if clock else {}
    return LeaseManager(store, Instance(host), lease_seconds=2.0, wait_seconds=0.5, **extra)


def test_a_remote_lease_excludes_expires_is_taken_over_and_fences_late_writes(
        two_hosts: tuple[VsphereBackend, VsphereBackend], name: str) -> None:
    a_backend, b_backend = two_hosts
    assert isinstance(a_backend.lease_store(), HttpLeaseStore)
    clock = FakeClock()
    a = _manager(a_backend.lease_store(), "a", clock)
    b = _manager(b_backend.lease_store(), "b", clock)
    ds = a_backend.datastores()[0].name
    path = f"dockvols/_DEFAULT/.lease-{name}"
    loc = DiskLocation(ds, "_DEFAULT", name)
    lease_a = a.acquire(ds, path, f"volume {name}")
    assert lease_a is not None
    assert b.acquire(ds, path, f"volume {name}", wait=False) is None
    a_backend.write_metadata(loc, {"by": "a"}, fence=lease_a)
    assert b_backend.read_metadata(loc) == {"by": "a"}
    stamp = b.store.stamp(ds, lease_a.staging)
    a.renew_all()  # a renewal over the API changes what a waiter sees
    assert b.store.stamp(ds, lease_a.staging) != stamp
    assert b.acquire(ds, path, f"volume {name}", wait=False) is None  # first look
    clock.now += 2.1  # a is silent for longer than the lease
    lease_b = b.acquire(ds, path, f"volume {name}", wait=False)
    assert lease_b is not None
    assert len(lease_b.graves) == 1  # a's entry, renamed away: b's to finish and delete
    b_backend.write_metadata(loc, {"by": "b"}, fence=lease_b)
    lease_a.renewed_at = clock.now  # a wakes up believing it still holds the lease
    with pytest.raises(LeaseLost):
        a_backend.write_metadata(loc, {"by": "a, late"}, fence=lease_a)
    # a delete's move is sent, its end read later (before the lease's next use): the
    # datastore refuses it all the same, and the holder learns it has lost the lease
    a_backend.delete_metadata(loc, fence=lease_a)
    lease_a.settle()
    assert lease_a.lost
    assert b_backend.read_metadata(loc) == {"by": "b"}
    a.renew_all()
    assert lease_a.lost
    b_backend.delete_metadata(loc, fence=lease_b)
    assert a_backend.read_metadata(loc) is None
    b.bury(lease_b)
    b.release(lease_b)
    assert b.store.list_dir(ds, path) == []  # released: no entry left


def test_two_remote_services_racing_creates_make_one_disk(
        two_hosts: tuple[VsphereBackend, VsphereBackend], name: str) -> None:
    services = [VolumeService(backend, locks=ClusterLocks(_manager(backend.lease_store(),
                                                                   f"h{i}")))
                for i, backend in enumerate(two_hosts)]
    for svc in services:
        svc._locks.leases.wait_seconds = 30  # type: ignore[attr-defined]
    vm = "DC0_H0_VM0"
    answers: list[object] = []

    def create(svc: VolumeService) -> None:
        try:
            answers.append(svc.create(vm, name, {"size": "10mb"})["disk_uuid"])
        except Exception as exc:  # reported by the assertion below
            answers.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 2 and answers[0] == answers[1], answers
    assert [v["name"] for v in services[0].list(vm) if v["volume"] == name] == \
        [v["name"] for v in services[1].list(vm) if v["volume"] == name]
    services[1].remove(vm, name)
    for svc in services:
        svc._locks.close()  # type: ignore[attr-defined]  # kept leases go with the test


def test_recovery_leaves_a_volume_attached_to_another_hosts_vm_attached(
        two_hosts: tuple[VsphereBackend, VsphereBackend], name: str) -> None:
    """One service per ESXi host: a VM of another host is unknown here, so this host's
    recovery must not mark that VM's disk detached."""
    backend = two_hosts[0]
    locks = ClusterLocks(_manager(backend.lease_store(), "r"))
    service = VolumeService(backend, locks=locks)
    vm = "DC0_H0_VM0"
    service.create(vm, name, {"size": "10mb"})
    # The other host's service wrote this under the volume's lease, which this one kept
    # after its create: it lets it go first (else recovery would trust what it wrote last)
    locks.release_kept()
    ds = backend.datastores()[0].name
    loc = DiskLocation(ds, "_DEFAULT", name)
    meta = backend.read_metadata(loc)
    assert meta is not None
    backend.write_metadata(loc, {**meta, "status": "attached", "attached_to": "vm-on-esx-7",
                                 "attach_info": {"kind": "scsi", "unit": 1}})
    service.recover()
    assert service.get(vm, name)["attached_to"] == "vm-on-esx-7"
    locks.release_kept()  # as above: the other host writes under the lease
    backend.write_metadata(loc, meta)
    service.remove(vm, name)
    locks.close()


def _leased_services(two_hosts: tuple[VsphereBackend, VsphereBackend], clock: FakeClock
                     ) -> tuple[VolumeService, VolumeService]:
    """A VolumeService per host, each on its own leases, both on one fake clock."""
    return tuple(VolumeService(backend, locks=ClusterLocks(  # type: ignore[return-value]
        _manager(backend.lease_store(), host, clock)))
        for backend, host in zip(two_hosts, "ab", strict=True))


@dataclass
class _TwoHolders:
    """Two hosts' services on one datastore and one fake clock, and a volume's place."""

    a: VolumeService
    b: VolumeService
    a_backend: VsphereBackend
    clock: FakeClock
    ds: str
    loc: DiskLocation
    vm: str = "DC0_H0_VM0"

    @property
    def disk(self) -> str:
        return f"{self.loc.folder}/{self.loc.stem}.vmdk"

    @classmethod
    def of(cls, two_hosts: tuple[VsphereBackend, VsphereBackend], name: str) -> _TwoHolders:
        clock = FakeClock()
        a, b = _leased_services(two_hosts, clock)
        ds = two_hosts[0].datastores()[0].name
        return cls(a, b, two_hosts[0], clock, ds, DiskLocation(ds, "_DEFAULT", name))


def _a_dies_and_its_lease_expires(a: VolumeService, b: VolumeService, loc: DiskLocation,
                                  clock: FakeClock) -> tuple[LeaseStore, str]:
    """``a`` dies holding the volume's lease (kept, never renewed nor released again); ``b``
    finds it live, then the clock passes its bound. ``b``'s lease store and the lease's
    path, to look into afterwards."""
    a_locks = a._locks
    assert isinstance(a_locks, ClusterLocks)
    a_locks._closed.set()  # its keeper thread goes with it
    a_locks._kept.clear()
    lease_path = f"{loc.folder}/.lease-{loc.stem}"
    b_manager = b._locks.leases  # type: ignore[attr-defined]
    assert b_manager.acquire(loc.datastore, lease_path, "first look", wait=False) is None
    clock.now += 2.1
    return b_manager.store, lease_path


class _Crash(BaseException):
    """The service dies here: nothing after it runs."""


@pytest.mark.parametrize("cut", ["create", "remove"])
def test_a_remote_holders_cut_create_or_remove_is_finished_by_the_next_holder(
        two_hosts: tuple[VsphereBackend, VsphereBackend], name: str, cut: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the vSphere file API: a create that died after its disk (its mark in the lease's
    staging folder, no record) or a remove that died after moving its record aside (the
    disk still there) is finished by the next holder, once the dead one's lease expired:
    the grave listed, the disk deleted, the grave deleted, under the lease."""
    h = _TwoHolders.of(two_hosts, name)
    a, b, a_backend, ds, loc, disk, vm = h.a, h.b, h.a_backend, h.ds, h.loc, h.disk, h.vm
    if cut == "create":
        real = VsphereBackend.write_metadata

        def die_at_the_record(self, where, data, **kw):  # type: ignore[no-untyped-def]
            if data.get("status") == "detached":
                raise _Crash("after the disk, before its record")
            return real(self, where, data, **kw)
        monkeypatch.setattr(VsphereBackend, "write_metadata", die_at_the_record)
        monkeypatch.setattr(VolumeService, "_undo_create", lambda *args, **kw: None)
        with pytest.raises(_Crash):
            a.create(vm, name, {"size": "10mb"})
    else:
        a.create(vm, name, {"size": "10mb"})

        def die(point: str) -> None:
            if point == "remove.marked":
                raise _Crash(point)
        monkeypatch.setattr("esx_service.volumes.fault_point", die)
        with pytest.raises(_Crash):
            a.remove(vm, name)
    monkeypatch.undo()
    assert a_backend.read_file(ds, disk) is not None  # the disk is there, no record
    assert a_backend.read_metadata(loc) is None
    b_store, lease_path = _a_dies_and_its_lease_expires(a, b, loc, h.clock)
    assert b.create(vm, name, {"size": "10mb"})["status"] == "detached"
    assert not [e for e in b_store.list_dir(ds, lease_path) if e.startswith(".dead-")]
    b.remove(vm, name)
    assert a_backend.read_file(ds, disk) is None
    b._locks.close()  # type: ignore[attr-defined]


def test_a_remote_holders_create_that_met_a_disk_there_before_leaves_that_disk(
        two_hosts: tuple[VsphereBackend, VsphereBackend], name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk at the volume's path with no record (a vDVS disk not yet imported): a create
    meets it (DiskExists) and dies before taking its mark back. The next holder finds the
    mark, dates the disk and the mark over the datastore browser, and leaves the disk: it
    was there before the create."""
    h = _TwoHolders.of(two_hosts, name)
    a, b, a_backend, ds, loc, disk, vm = h.a, h.b, h.a_backend, h.ds, h.loc, h.disk, h.vm
    a_backend.create_disk(loc, 10, "thin", None)  # the user's disk, no dockvols record
    time.sleep(1.1)  # made a while before the create: whole seconds apart on any server

    def die(self, key, mark):  # type: ignore[no-untyped-def]
        raise _Crash("before the mark is taken back")
    monkeypatch.setattr(ClusterLocks, "unmark", die)
    with pytest.raises(_Crash):
        a.create(vm, name, {"size": "10mb"})
    monkeypatch.undo()
    b_store, lease_path = _a_dies_and_its_lease_expires(a, b, loc, h.clock)
    with pytest.raises(DiskExists):
        b.create(vm, name, {"size": "10mb"})
    assert a_backend.read_file(ds, disk) is not None  # the user's disk is still there
    assert not [e for e in b_store.list_dir(ds, lease_path) if e.startswith(".dead-")]
    a_backend.delete_disk(loc)
    b._locks.close()  # type: ignore[attr-defined]
