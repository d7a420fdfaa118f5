from __future__ import annotations

import pytest

from plugin.errors import FilesystemError
from plugin.filesystem import SystemMounter, parse_mountinfo, unescape_mountinfo

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /proc rw,nosuid - proc proc rw
61 22 7:3 / /mnt/vmdk/db@ds1 rw,relatime shared:30 - ext4 /dev/loop3 rw
62 22 7:4 / /mnt/vmdk/with\040space@ds1 rw,relatime - xfs /dev/loop4 rw,attr2
63 22 7:5 / /mnt/vmdk/tab\011and\012newline\134back ro - ext4 /dev/loop5 ro
64 22 7:6 / /mnt/vmdk2/not-ours rw - ext4 /dev/loop6 rw
65 22 0:40 /sub /mnt/bind\040src rw master:2 other:3 - ext4 /dev/dm\0400 rw
garbage line without separator
"""


def test_unescape_turns_octal_escapes_into_characters():
    assert unescape_mountinfo(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"
    assert unescape_mountinfo("plain") == "plain"
    assert unescape_mountinfo("end\\04") == "end\\04"  # incomplete escape left alone


def test_parse_mountinfo_maps_mount_points_to_sources():
    table = parse_mountinfo(MOUNTINFO)
    assert table["/"] == "/dev/sda1"
    assert table["/mnt/vmdk/db@ds1"] == "/dev/loop3"
    assert table["/proc"] == "proc"


def test_parse_mountinfo_unescapes_paths():
    table = parse_mountinfo(MOUNTINFO)
    assert table["/mnt/vmdk/with space@ds1"] == "/dev/loop4"
    assert table["/mnt/vmdk/tab\tand\nnewline\\back"] == "/dev/loop5"
    assert table["/mnt/bind src"] == "/dev/dm 0"  # several optional fields, escaped source


def test_parse_mountinfo_skips_malformed_lines():
    assert parse_mountinfo("garbage\n1 2 3\n") == {}


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
