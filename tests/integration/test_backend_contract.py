"""One contract, every backend: the in-memory fake the unit tests trust, the real local
backend (files and loop devices) and the vsphere backend on vcsim must behave alike where
the volume layer depends on them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esx_service.backends.base import Backend, DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.errors import BackendError, DockvolsError
from tests.fakes import FakeBackend

from .vsphere.conftest import Vcsim, vcsim, vcsim_binary  # noqa: F401  (fixtures)


@dataclass
class Subject:
    backend: Backend
    datastore: str
    vm: str

    def loc(self, name: str | None = None) -> DiskLocation:
        return DiskLocation(self.datastore, "_DEFAULT", name or f"c{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["fake", "local", "vsphere"])
def subject(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[Subject]:
    if request.param == "fake":
        yield Subject(FakeBackend({"ds1": 50 * 1024 ** 3}), "ds1", "vm-a")
    elif request.param == "local":
        root = run_dir / f"contract-{uuid.uuid4().hex[:6]}"
        yield Subject(LocalBackend({"ds1": str(root)}), "ds1", "vm-a")
    else:
        sim: Vcsim = request.getfixturevalue("vcsim")
        with sim.backend() as backend:
            yield Subject(backend, "LocalDS_0", "DC0_H0_VM0")


def test_datastores_report_capacity_and_free_space(subject: Subject) -> None:
    stores = {d.name: d for d in subject.backend.datastores()}
    assert subject.datastore in stores
    store = stores[subject.datastore]
    assert store.capacity_bytes >= store.free_bytes >= 0 and store.capacity_bytes > 0


def test_metadata_round_trips_and_is_listed(subject: Subject) -> None:
    loc = subject.loc()
    assert subject.backend.read_metadata(loc) is None
    subject.backend.write_metadata(loc, {"name": loc.name, "n": 1})
    subject.backend.write_metadata(loc, {"name": loc.name, "n": 2})  # replaces
    assert subject.backend.read_metadata(loc) == {"name": loc.name, "n": 2}
    assert {"name": loc.name, "n": 2} in subject.backend.list_metadata(subject.datastore)
    subject.backend.delete_metadata(loc)
    subject.backend.delete_metadata(loc)  # missing is fine
    assert subject.backend.read_metadata(loc) is None


def test_a_disk_is_created_with_a_uuid_and_deleted_idempotently(subject: Subject) -> None:
    loc = subject.loc()
    disk_uuid = subject.backend.create_disk(loc, 64, "thin", None)
    assert disk_uuid and isinstance(disk_uuid, str)
    assert subject.backend.disk_allocated_bytes(loc) >= 0
    subject.backend.delete_disk(loc)
    subject.backend.delete_disk(loc)  # missing is fine


def test_attach_and_detach_are_seen_and_detach_is_idempotent(subject: Subject) -> None:
    loc = subject.loc()
    subject.backend.create_disk(loc, 64, "thin", None)
    try:
        info = subject.backend.attach_disk(loc, subject.vm, False, "persistent")
        assert info["kind"] in ("loop", "scsi")
        assert subject.backend.is_attached(loc, subject.vm, info)
        subject.backend.detach_disk(loc, subject.vm, info)
        assert not subject.backend.is_attached(loc, subject.vm, info)
        subject.backend.detach_disk(loc, subject.vm, info)  # not attached is fine
    finally:
        subject.backend.delete_disk(loc)


def test_a_clone_is_a_separate_disk(subject: Subject) -> None:
    src, dst = subject.loc(), subject.loc()
    first = subject.backend.create_disk(src, 64, "thin", None)
    try:
        second = subject.backend.clone_disk(src, dst, "thin")
        assert second and second != first
        info = subject.backend.attach_disk(dst, subject.vm, False, "persistent")
        subject.backend.detach_disk(dst, subject.vm, info)
    finally:
        subject.backend.delete_disk(dst)
        subject.backend.delete_disk(src)


def test_creating_over_an_existing_disk_is_refused(subject: Subject) -> None:
    loc = subject.loc()
    subject.backend.create_disk(loc, 64, "thin", None)
    try:
        with pytest.raises(DockvolsError):
            subject.backend.create_disk(loc, 64, "thin", None)
    finally:
        subject.backend.delete_disk(loc)


def test_a_missing_disk_cannot_be_attached(subject: Subject) -> None:
    with pytest.raises(BackendError):
        subject.backend.attach_disk(subject.loc(), subject.vm, False, "persistent")


def test_the_running_vm_is_reported_powered_on(subject: Subject) -> None:
    assert subject.backend.vm_powered_on(subject.vm) is True
