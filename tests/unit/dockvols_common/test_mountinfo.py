"""The one reader of the kernel's mount table, shared by the plugin, the bench and the tests."""

from __future__ import annotations

from dockvols_common.mountinfo import Mount, mounts_under, parse_mountinfo, unescape
from tests.fakes import MOUNTINFO


def test_unescape_turns_octal_escapes_into_characters():
    assert unescape(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"
    assert unescape("plain") == "plain"
    assert unescape("end\\04") == "end\\04"  # incomplete escape left alone


def test_parse_mountinfo_maps_mount_points_to_sources():
    table = {m.point: m.source for m in parse_mountinfo(MOUNTINFO)}
    assert table["/"] == "/dev/sda1"
    assert table["/mnt/vmdk/db@ds1"] == "/dev/loop3"
    assert table["/proc"] == "proc"


def test_parse_mountinfo_unescapes_paths():
    table = {m.point: m.source for m in parse_mountinfo(MOUNTINFO)}
    assert table["/mnt/vmdk/with space@ds1"] == "/dev/loop4"
    assert table["/mnt/vmdk/tab\tand\nnewline\\back"] == "/dev/loop5"
    assert table["/mnt/bind src"] == "/dev/dm 0"  # several optional fields, escaped source


def test_parse_mountinfo_skips_malformed_lines():
    assert parse_mountinfo("garbage\n1 2 3\n") == []


def test_parse_mountinfo_keeps_ids_and_fstype_for_telling_stacked_mounts_apart():
    first = parse_mountinfo(MOUNTINFO)[2]
    assert first == Mount("61", "22", "/mnt/vmdk/db@ds1", "/dev/loop3", "ext4")


def test_mounts_under_a_root_leaves_out_the_root_itself_and_its_siblings(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO + "66 22 7:7 / /mnt/vmdk rw - ext4 /dev/loop7 rw\n")
    points = [m.point for m in mounts_under("/mnt/vmdk", str(path))]
    assert points == ["/mnt/vmdk/db@ds1", "/mnt/vmdk/with space@ds1",
                      "/mnt/vmdk/tab\tand\nnewline\\back"]
