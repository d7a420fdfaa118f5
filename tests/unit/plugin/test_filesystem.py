from __future__ import annotations

import pytest

from plugin.errors import FilesystemError
from plugin.filesystem import SystemMounter
from tests.fakes import MOUNTINFO


def test_mounts_under_keeps_only_paths_below_the_root(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    mounts = SystemMounter(str(path)).mounts_under("/mnt/vmdk/")
    assert mounts == {
        "/mnt/vmdk/db@ds1": "/dev/loop3",
        "/mnt/vmdk/with space@ds1": "/dev/loop4",
        "/mnt/vmdk/tab\tand\nnewline\\back": "/dev/loop5",
    }  # /mnt/vmdk2 shares the prefix but is not below /mnt/vmdk


def test_mkfs_refuses_an_unsupported_fstype_before_running_anything():
    with pytest.raises(FilesystemError, match="unsupported fstype 'btrfs'.*ext4, xfs"):
        SystemMounter().mkfs("/dev/loop0", "btrfs", "db")


def test_a_label_from_a_name_of_any_script_fits_in_bytes_and_keeps_whole_characters():
    from plugin.filesystem import fs_label
    assert fs_label("données", 12) == "données"
    assert fs_label("卷卷卷卷卷", 12) == "卷卷卷卷"  # 12 bytes, not 12 characters
    assert fs_label("é" * 10, 12).encode() == ("é" * 6).encode()
    assert len(fs_label("abcdefghijklmnopq", 16)) == 16
