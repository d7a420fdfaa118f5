"""The one reader of which file each loop device is bound to, over a fake /sys/block."""

from __future__ import annotations

import errno
import os

import pytest

from dockvols_common.loop_table import DELETED, backing_file, loop_table, loops_under


def _bind(sysfs, device: str, backing: str) -> None:
    os.makedirs(sysfs / device / "loop", exist_ok=True)
    (sysfs / device / "loop" / "backing_file").write_text(backing + "\n")


def test_the_table_lists_bound_loop_devices_only_by_device_name(tmp_path):
    _bind(tmp_path, "loop1", "/ds/b-flat.vmdk")
    _bind(tmp_path, "loop0", "/ds/a-flat.vmdk")
    os.makedirs(tmp_path / "loop2")  # present but not bound
    os.makedirs(tmp_path / "sda")
    assert loop_table(str(tmp_path)) == [("/dev/loop0", "/ds/a-flat.vmdk"),
                                         ("/dev/loop1", "/ds/b-flat.vmdk")]
    assert backing_file("/dev/loop1", str(tmp_path)) == "/ds/b-flat.vmdk"
    assert backing_file("/dev/loop2", str(tmp_path)) is None


def test_loops_under_a_root_include_deleted_files_and_not_siblings(tmp_path):
    _bind(tmp_path, "loop0", "/run/dv-1/ds/a-flat.vmdk")
    _bind(tmp_path, "loop1", "/run/dv-1/ds/gone-flat.vmdk" + DELETED)
    _bind(tmp_path, "loop2", "/run/dv-10/ds/c-flat.vmdk")
    assert loops_under("/run/dv-1", str(tmp_path)) == ["/dev/loop0", "/dev/loop1"]


def test_no_sysfs_means_no_loop_devices(tmp_path):
    assert loop_table(str(tmp_path / "missing")) == []


def test_an_unexpected_read_error_names_the_sysfs_file(tmp_path, monkeypatch):
    _bind(tmp_path, "loop0", "/x")
    real_open = os.open

    def eio(path, *args, **kwargs):
        if "loop0" in str(path):
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", eio)
    with pytest.raises(OSError) as raised:
        loop_table(str(tmp_path))
    assert raised.value.filename == str(tmp_path / "loop0" / "loop" / "backing_file")


def test_with_the_partitions_list_only_the_sized_loop_devices_are_read(tmp_path,
                                                                        monkeypatch):
    sysfs = tmp_path / "block"
    _bind(sysfs, "loop0", "/ds/a-flat.vmdk")
    _bind(sysfs, "loop3", "/ds/empty-file")  # bound to an empty file: size 0, unlisted
    _bind(sysfs, "loop12", "/ds/c-flat.vmdk")
    partitions = tmp_path / "partitions"
    partitions.write_text("major minor  #blocks  name\n\n"
                          " 254        0  268435456 vda\n"
                          "   7        0     102400 loop0\n"
                          "   7       12      51200 loop12\n"
                          " 259        1    1000000 nvme0n1p1\n")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a: (opened.append(str(path)),
                                                      real_open(path, *a))[1])
    table = loop_table(str(sysfs), partitions=str(partitions))
    monkeypatch.undo()
    assert table == [("/dev/loop0", "/ds/a-flat.vmdk"), ("/dev/loop12", "/ds/c-flat.vmdk")]
    assert not any("loop3" in path for path in opened)
    assert loop_table(str(sysfs), partitions=str(tmp_path / "missing")) == []
