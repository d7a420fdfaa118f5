"""Removed extents leave the volume at once and are freed by the trash's thread
(esx_service/backends/trash.py), on real files in tmp_path."""

from __future__ import annotations

import os
import threading

import pytest

from esx_service.backends import trash as trash_module
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.backends.trash import TRASH, Trash
from esx_service.options import MB

LOC = DiskLocation("ds1", "_DEFAULT", "db")


def _extent(backend: LocalBackend) -> str:
    return os.path.join(backend._paths["ds1"], LOC.folder, "db-flat.vmdk")


def _trash_files(root: str) -> list[str]:
    try:
        return os.listdir(os.path.join(root, TRASH))
    except FileNotFoundError:
        return []


def test_a_deleted_disk_is_gone_from_the_volume_at_once_and_freed_soon(local_backend):
    local_backend.create_disk(LOC, 16, "eagerzeroedthick", None)
    local_backend.delete_disk(LOC)
    assert not os.path.exists(_extent(local_backend))
    assert local_backend._trash.wait_empty(5)
    assert _trash_files(local_backend._paths["ds1"]) == []
    assert local_backend._trash.pending("ds1") == 0


def test_bytes_waiting_in_the_trash_still_count_as_free(local_backend, monkeypatch):
    gate = threading.Event()
    real_unlink = trash_module._unlink
    monkeypatch.setattr(trash_module, "_unlink", lambda p: (gate.wait(5), real_unlink(p)))
    local_backend.create_disk(LOC, 16, "eagerzeroedthick", None)
    allocated = local_backend.disk_allocated_bytes(LOC)
    assert allocated >= 16 * MB
    local_backend.delete_disk(LOC)
    assert local_backend._trash.pending("ds1") == allocated
    free = {d.name: d.free_bytes for d in local_backend.datastores()}["ds1"]
    st = os.statvfs(local_backend._paths["ds1"])
    assert free == st.f_bavail * st.f_frsize + allocated  # as if already freed
    gate.set()
    assert local_backend._trash.wait_empty(5)
    assert local_backend._trash.pending("ds1") == 0


def test_what_a_crashed_service_left_in_the_trash_is_freed_at_the_next_start(
        tmp_path, losetup):
    folder = tmp_path / "ds1" / TRASH
    folder.mkdir(parents=True)
    (folder / "0123.deleting").write_bytes(b"x" * 4096)
    backend = LocalBackend({"ds1": str(tmp_path / "ds1")}, run=losetup)
    assert backend._trash.wait_empty(5)
    assert _trash_files(str(tmp_path / "ds1")) == []
    backend.close()


def test_the_trash_is_no_vmgroup_and_holds_no_disk_an_import_could_find(local_backend,
                                                                        monkeypatch):
    gate = threading.Event()
    real_unlink = trash_module._unlink
    monkeypatch.setattr(trash_module, "_unlink", lambda p: (gate.wait(5), real_unlink(p)))
    local_backend.create_disk(LOC, 8, "thin", None)
    local_backend.write_metadata(LOC, {"name": "db"})
    other = DiskLocation("ds1", "_DEFAULT", "gone")
    local_backend.create_disk(other, 8, "thin", None)
    local_backend.delete_disk(other)
    assert len(_trash_files(local_backend._paths["ds1"])) == 1
    assert local_backend.list_metadata("ds1") == [{"name": "db"}]
    assert local_backend.find_files("ds1", "dockvols", "*.vmdk") == [
        "dockvols/_DEFAULT/db-flat.vmdk", "dockvols/_DEFAULT/db.vmdk"]
    gate.set()
    assert local_backend._trash.wait_empty(5)


def test_a_missing_extent_is_fine(local_backend):
    local_backend._trash.discard("ds1", _extent(local_backend))
    assert local_backend._trash.pending("ds1") == 0


@pytest.mark.parametrize("fails", [True, False])
def test_close_frees_what_is_queued_or_leaves_it_for_the_next_start(tmp_path, losetup,
                                                                     monkeypatch, fails):
    if fails:
        monkeypatch.setattr(trash_module, "_unlink",
                            lambda p: (_ for _ in ()).throw(PermissionError(13, "denied", p)))
    root = tmp_path / "ds1"
    trash = Trash({"ds1": str(root)})
    victim = root / "v-flat.vmdk"
    root.mkdir()
    victim.write_bytes(b"x" * 8192)
    trash.discard("ds1", str(victim))
    trash.close()
    assert not victim.exists()
    assert len(_trash_files(str(root))) == (1 if fails else 0)


def test_the_thread_ends_when_idle_and_the_next_discard_starts_another(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(trash_module, "IDLE_EXIT", 0.3)
    root = tmp_path / "ds1"
    root.mkdir()
    trash = Trash({"ds1": str(root)})
    for n in range(2):
        victim = root / f"v{n}-flat.vmdk"
        victim.write_bytes(b"x" * 4096)
        trash.discard("ds1", str(victim))
        assert trash.wait_empty(5)
        thread = trash._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive() and trash._thread is None
    assert _trash_files(str(root)) == []


def test_an_extent_that_cannot_be_moved_into_the_trash_is_freed_at_once(tmp_path,
                                                                         monkeypatch):
    root = tmp_path / "ds1"
    root.mkdir()
    victim = root / "v-flat.vmdk"
    victim.write_bytes(b"x" * 4096)
    trash = Trash({"ds1": str(root)})

    def cross_device(source: str, target: str) -> None:
        raise OSError(18, "Invalid cross-device link", source)
    monkeypatch.setattr(trash_module.os, "rename", cross_device)
    trash.discard("ds1", str(victim))
    assert not victim.exists()
    assert trash.pending("ds1") == 0 and trash._thread is None
