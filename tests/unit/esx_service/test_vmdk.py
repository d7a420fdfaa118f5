from __future__ import annotations

import re

import pytest

from esx_service.admin.importer import parse_vdvs_sidecar
from esx_service.vmdk import (
    SECTOR,
    build_descriptor,
    describe_vmdk,
    new_disk_uuid,
    parse_descriptor,
    resize_descriptor,
    with_extent_and_uuid,
)

MB = 1024 * 1024


@pytest.mark.parametrize("thin", [True, False])
def test_descriptor_round_trips(thin):
    disk_uuid = new_disk_uuid()
    text = build_descriptor("db-flat.vmdk", 100 * MB, thin, disk_uuid)
    desc = parse_descriptor(text)
    assert desc.extent_file == "db-flat.vmdk"
    assert desc.sectors == 100 * MB // SECTOR
    assert desc.size_bytes == 100 * MB
    assert desc.thin is thin
    assert desc.uuid == disk_uuid
    assert desc.create_type == "vmfs"


def test_descriptor_has_the_vmfs_extent_line_and_ddb_entries():
    text = build_descriptor("db-flat.vmdk", 10 * MB, True, "60 00")
    assert 'RW 20480 VMFS "db-flat.vmdk"' in text.splitlines()
    assert 'ddb.thinProvisioned = "1"' in text
    assert 'ddb.uuid = "60 00"' in text
    assert text.startswith("# Disk DescriptorFile\n")


def _geometry(text: str) -> tuple[int, int, int]:
    def value(key: str) -> int:
        return int(re.search(rf'ddb\.geometry\.{key} = "(\d+)"', text).group(1))
    return value("cylinders"), value("heads"), value("sectors")


@pytest.mark.parametrize("size,cylinders", [
    (100 * MB, 100 * MB // SECTOR // (255 * 63)),   # 12
    (1 * MB, 1),                                     # tiny disks still have one cylinder
    (62 * 1024 * 1024 * MB, 65535),                  # capped at the field's maximum
])
def test_geometry_is_255_heads_63_sectors_and_bounded_cylinders(size, cylinders):
    assert _geometry(build_descriptor("x-flat.vmdk", size, True, "u")) == (cylinders, 255, 63)


def test_a_size_that_is_not_whole_sectors_is_refused():
    with pytest.raises(ValueError, match="multiple of 512"):
        build_descriptor("x-flat.vmdk", 1000, True, "u")


def test_parse_refuses_text_without_an_extent():
    with pytest.raises(ValueError, match="extent"):
        parse_descriptor("# Disk DescriptorFile\nversion=1\n")


def test_parse_reads_a_qemu_style_monolithic_flat_descriptor():
    text = ('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
            'createType="monolithicFlat"\n\n# Extent description\n'
            'RDONLY 2048 FLAT "disk-flat.vmdk" 0\n\nddb.adapterType = "ide"\n')
    desc = parse_descriptor(text)
    assert (desc.extent_file, desc.sectors, desc.thin, desc.uuid, desc.create_type) == (
        "disk-flat.vmdk", 2048, False, "", "monolithicFlat")


def test_new_disk_uuids_are_16_spaced_hex_bytes_and_unique():
    a, b = new_disk_uuid(), new_disk_uuid()
    assert re.fullmatch(r"([0-9a-f]{2} ){15}[0-9a-f]{2}", a)
    assert a != b


def test_resize_descriptor_changes_only_the_extent_size_and_geometry():
    disk_uuid = new_disk_uuid()
    text = build_descriptor("db-flat.vmdk", 100 * MB, True, disk_uuid)
    text += 'ddb.toolsVersion = "12345"\n'  # a line of an imported disk's own
    grown = resize_descriptor(text, 4096 * MB)
    desc = parse_descriptor(grown)
    assert (desc.size_bytes, desc.uuid, desc.thin, desc.extent_file) == (
        4096 * MB, disk_uuid, True, "db-flat.vmdk")
    assert grown == build_descriptor("db-flat.vmdk", 4096 * MB, True, disk_uuid) + \
        'ddb.toolsVersion = "12345"\n'


def test_resize_descriptor_refuses_what_is_not_a_flat_descriptor():
    with pytest.raises(ValueError, match="not a flat VMDK"):
        resize_descriptor("version=1\n", 100 * MB)
    with pytest.raises(ValueError, match="multiple of 512"):
        resize_descriptor(build_descriptor("x-flat.vmdk", MB, True, "u"), MB + 1)


# -- descriptors of disks made elsewhere (import) --------------------------------------------
QEMU = (b'# Disk DescriptorFile\nversion=1\nCID=d3b7247a\nparentCID=ffffffff\n'
        b'createType="monolithicFlat"\n\n# Extent description\n'
        b'RW 131072 FLAT "disk-flat.vmdk" 0\n\n#DDB\nddb.adapterType = "ide"\n').ljust(512, b"\0")


def test_a_qemu_img_descriptor_gives_capacity_extent_and_thick_format():
    facts = describe_vmdk(QEMU)
    assert facts.capacity_bytes == 64 * 1024 * 1024
    assert facts.extents == (("FLAT", "disk-flat.vmdk"),)
    assert facts.create_type == "monolithicFlat" and facts.diskformat == "zeroedthick"
    assert facts.uuid == "" and facts.sidecars == ()


def test_an_esx_descriptor_with_a_vdvs_side_car_is_thin_and_names_it():
    text = build_descriptor("db-flat.vmdk", 2 * 1024 ** 3, True, "60 00 c2 9a")
    text += 'ddb.sidecars = "docker-volume-vsphere,db-1a2b.vmfd"\n'
    facts = describe_vmdk(text.encode())
    assert (facts.diskformat, facts.uuid, facts.sidecars) == ("thin", "60 00 c2 9a",
                                                             ("db-1a2b.vmfd",))


@pytest.mark.parametrize(("head", "why"), [
    (b"KDMV" + bytes(100), "sparse VMDK"), (b"COWD" + bytes(100), "sparse VMDK"),
    (b"hello", "not a VMDK descriptor"), (bytes(512), "not a VMDK descriptor"),
    (QEMU.replace(b"parentCID=ffffffff", b"parentCID=0badf00d"), "delta disk"),
])
def test_what_cannot_be_adopted_says_why(head, why):
    with pytest.raises(ValueError, match=why):
        describe_vmdk(head)


def test_a_moved_descriptor_names_its_new_extent_and_gains_a_uuid_once():
    moved = with_extent_and_uuid(QEMU.decode(), "my~20data-flat.vmdk", "60 00 c2 11")
    facts = describe_vmdk(moved.encode())
    assert facts.extents == (("FLAT", "my~20data-flat.vmdk"),) and facts.uuid == "60 00 c2 11"
    again = with_extent_and_uuid(moved, "x-flat.vmdk", "60 00 c2 22")
    assert describe_vmdk(again.encode()).uuid == "60 00 c2 11"


def test_vdvs_side_car_options_are_kept_only_where_dockvols_has_them():
    raw = (b'{"volOpts": {"access": "read-only", "fstype": "xfs", "size": "1gb", '
           b'"attach-as": "independent_persistent", "vsan-policy-name": "gold"}}').ljust(4095)
    assert parse_vdvs_sidecar(raw + b"\n") == {"access": "read-only", "fstype": "xfs",
                                               "attach-as": "independent_persistent"}
    assert parse_vdvs_sidecar(b'{"volOpts": {"fstype": "ntfs"}}') == {}
