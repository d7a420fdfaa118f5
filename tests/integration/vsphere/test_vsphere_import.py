"""What vDVS users bring, on vcsim: names with spaces and symbols (through the datastore HTTP
interface), and a disk made outside dockvols, imported: VirtualDiskManager makes it, dockvols
reads its descriptor over the datastore HTTP interface, moves it with MoveVirtualDisk and
attaches it. vcsim writes empty disk files, so the test writes the descriptor ESX would have
written (VCSIM-NOTES)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from esx_service.admin.db import AdminDb
from esx_service.admin.importer import Importer
from esx_service.backends.vsphere import VsphereBackend
from esx_service.errors import VolumeInUse
from esx_service.file_names import file_stem
from esx_service.vmdk import build_descriptor
from esx_service.volumes import VolumeService

from .conftest import Vcsim
from .test_vsphere_backend import DS, VM0, VM1, vm_disks, volume_file


@pytest.fixture
def importer(service: VolumeService, tmp_path: Path) -> Iterator[Importer]:
    db = AdminDb(str(tmp_path / "dockvols.db"))
    yield Importer(service, service.backend, db)
    db.close()


def make_outside(vcsim: Vcsim, backend: VsphereBackend, relative: str) -> None:
    """A thin 1 GB disk made with VirtualDiskManager, outside dockvols' folders."""
    dc, _ = backend.inventory.datacenter()
    fm, vdm = backend.session.file_manager, backend.session.disk_manager
    folder = relative.rpartition("/")[0]
    try:
        fm.MakeDirectory(name=f"[{DS}] {folder}", datacenter=dc, createParentDirectories=True)
    except vim.fault.FileAlreadyExists:
        pass
    spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
        diskType="thin", adapterType="lsiLogic", capacityKb=1024 * 1024)
    backend.session.wait(vdm.CreateVirtualDisk_Task(name=f"[{DS}] {relative}", datacenter=dc,
                                                    spec=spec), "creating a test disk")
    stem = relative.rpartition("/")[2][:-len(".vmdk")]
    volume_file(vcsim, backend, relative).write_text(build_descriptor(
        f"{stem}-flat.vmdk", 1024 ** 3, True, "60 00 c2 91 2a 3b 4c 5d-6e 7f 80 91 a2 b3 c4 d5"))


def test_a_disk_made_outside_dockvols_is_imported_then_attached(
        vcsim: Vcsim, backend: VsphereBackend, service: VolumeService, importer: Importer,
        name: str) -> None:
    make_outside(vcsim, backend, f"outside/{name}.vmdk")
    volume = f"imported {name}"
    view = importer.import_disk(f"[{DS.lower()}] outside/{name}.vmdk", volume, None)
    assert (view["volume"], view["capacity_mb"], view["diskformat"]) == (volume, 1024, "thin")
    assert view["formatted"] is False
    path = f"dockvols/_DEFAULT/{file_stem(volume)}.vmdk"
    assert volume_file(vcsim, backend, path).exists()
    assert not volume_file(vcsim, backend, f"outside/{name}.vmdk").exists()
    assert volume in [v["volume"] for v in service.list(VM0)]

    attached = service.attach(VM0, volume)
    assert attached["attach"]["kind"] == "scsi"
    assert f"[{DS}] {path}" in vm_disks(backend, VM0)
    service.detach(VM0, volume)
    service.remove(VM0, volume)
    assert not volume_file(vcsim, backend, path).exists()


def test_a_disk_attached_to_a_running_vm_is_not_imported(
        vcsim: Vcsim, backend: VsphereBackend, service: VolumeService, importer: Importer,
        name: str) -> None:
    service.create(VM1, name, {})
    descriptor = build_descriptor(f"{name}-flat.vmdk", 100 * 1024 ** 2, True,
                                  "60 00 c2 9f 00 11 22 33-44 55 66 77 88 99 aa bb")
    volume_file(vcsim, backend, f"dockvols/_DEFAULT/{name}.vmdk").write_text(descriptor)
    service.attach(VM1, name)
    try:
        with pytest.raises(VolumeInUse, match=f"attached to {VM1} \\(running\\)"):
            importer.import_disk(f"[{DS}] dockvols/_DEFAULT/{name}.vmdk", f"{name}-copy", None)
    finally:
        service.detach(VM1, name)
        service.remove(VM1, name)


def test_a_vdvs_style_name_lives_through_the_datastore_http_interface(
        vcsim: Vcsim, backend: VsphereBackend, service: VolumeService, name: str) -> None:
    # metadata goes through /folder PUT/GET and MoveDatastoreFile, the disk through
    # VirtualDiskManager: the encoded stem must survive both, the name as typed shown back
    volume = f"my vol #{name} é?"
    created = service.create(VM0, f"{volume}@{DS.lower()}", {})
    assert (created["volume"], created["datastore"]) == (volume, DS)
    stem = file_stem(volume)
    assert "~" in stem
    assert volume_file(vcsim, backend, f"dockvols/_DEFAULT/{stem}.json").exists()
    assert volume in [v["volume"] for v in service.list(VM0)]
    assert service.get(VM0, volume)["name"] == f"{volume}@{DS}"
    service.attach(VM0, volume)
    assert f"[{DS}] dockvols/_DEFAULT/{stem}.vmdk" in vm_disks(backend, VM0)
    service.detach(VM0, volume)
    service.remove(VM0, volume)
    assert not volume_file(vcsim, backend, f"dockvols/_DEFAULT/{stem}.json").exists()
