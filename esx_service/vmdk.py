"""VMDK descriptors for flat (VMFS-style) disks: built and parsed as text, no I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

SECTOR = 512
_EXTENT = re.compile(r'^(RW|RDONLY)\s+(\d+)\s+(VMFS|FLAT)\s+"([^"]+)"', re.MULTILINE)
_DDB = re.compile(r'^ddb\.([\w.]+)\s*=\s*"([^"]*)"', re.MULTILINE)
_CREATE_TYPE = re.compile(r'^createType\s*=\s*"([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class Descriptor:
    extent_file: str
    sectors: int
    thin: bool
    uuid: str
    create_type: str = "vmfs"

    @property
    def size_bytes(self) -> int:
        return self.sectors * SECTOR


def new_disk_uuid() -> str:
    """A disk UUID in VMware's spaced-hex form, e.g. ``60 00 c2 9a ...``."""
    raw = uuid.uuid4().hex
    return " ".join(raw[i:i + 2] for i in range(0, 32, 2))


def build_descriptor(extent_file: str, size_bytes: int, thin: bool, disk_uuid: str) -> str:
    if size_bytes % SECTOR:
        raise ValueError(f"disk size {size_bytes} is not a multiple of {SECTOR}")
    sectors = size_bytes // SECTOR
    cylinders = _cylinders(sectors)
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        'encoding="UTF-8"',
        "CID=fffffffe",
        "parentCID=ffffffff",
        'createType="vmfs"',
        "",
        "# Extent description",
        f'RW {sectors} VMFS "{extent_file}"',
        "",
        "# The Disk Data Base",
        "#DDB",
        "",
        'ddb.adapterType = "lsilogic"',
        f'ddb.geometry.cylinders = "{cylinders}"',
        'ddb.geometry.heads = "255"',
        'ddb.geometry.sectors = "63"',
        f'ddb.thinProvisioned = "{1 if thin else 0}"',
        f'ddb.uuid = "{disk_uuid}"',
        'ddb.virtualHWVersion = "13"',
        "",
    ]
    return "\n".join(lines)


def _cylinders(sectors: int) -> int:
    return max(1, min(sectors // (255 * 63), 65535))


def resize_descriptor(text: str, size_bytes: int) -> str:
    """The same descriptor with its extent (and geometry) at ``size_bytes``; every other
    line (an imported disk's own UUID, adapter, tools keys) is kept as it is."""
    if size_bytes % SECTOR:
        raise ValueError(f"disk size {size_bytes} is not a multiple of {SECTOR}")
    if not _EXTENT.search(text):
        raise ValueError("not a flat VMDK descriptor: no RW/RDONLY VMFS|FLAT extent line")
    sectors = size_bytes // SECTOR
    text = _EXTENT.sub(lambda m: f'{m.group(1)} {sectors} {m.group(3)} "{m.group(4)}"', text,
                       count=1)
    return re.sub(r'^(ddb\.geometry\.cylinders\s*=\s*)"\d+"',
                  lambda m: f'{m.group(1)}"{_cylinders(sectors)}"', text, count=1,
                  flags=re.MULTILINE)


def parse_descriptor(text: str) -> Descriptor:
    extent = _EXTENT.search(text)
    if not extent:
        raise ValueError("not a flat VMDK descriptor: no RW/RDONLY VMFS|FLAT extent line")
    ddb = dict(_DDB.findall(text))
    create_type = _CREATE_TYPE.search(text)
    return Descriptor(
        extent_file=extent.group(4),
        sectors=int(extent.group(2)),
        thin=ddb.get("thinProvisioned", "0") == "1",
        uuid=ddb.get("uuid", ""),
        create_type=create_type.group(1) if create_type else "",
    )


# -- descriptors of disks made elsewhere (import) -----------------------------------------
_ANY_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]+)"', re.MULTILINE)
_PARENT_CID = re.compile(r'^parentCID\s*=\s*(\w+)', re.MULTILINE)
# vDVS's side-car line: a key holding "sidecars", the value "<key>,<file>.vmfd"
_SIDECARS = re.compile(r'^[\w.]*sidecars[\w.]*\s*=\s*"([^"]*)"', re.MULTILINE)
SPARSE_EXTENTS = ("VMFSSPARSE", "SESPARSE", "VSANSPARSE", "SPARSE")
FLAT_EXTENTS = ("VMFS", "FLAT")
DESCRIPTOR_LIMIT = 64 * 1024  # a descriptor is a few hundred bytes; a bigger file is data


@dataclass(frozen=True)
class DiskFacts:
    """What a VMDK's descriptor says about a disk dockvols did not make."""

    capacity_bytes: int
    create_type: str
    extents: tuple[tuple[str, str], ...]  # (extent type, file), in order
    thin: bool
    uuid: str
    sidecars: tuple[str, ...] = ()

    @property
    def diskformat(self) -> str:
        # A descriptor tells thin from thick, not lazily from eagerly zeroed thick.
        return "thin" if self.thin else "zeroedthick"


def describe_vmdk(head: bytes) -> DiskFacts:
    """Facts from the first bytes of a ``.vmdk`` file; ValueError says why it is not a disk
    dockvols can adopt (and what to do about it)."""
    if head[:4] in (b"KDMV", b"COWD"):
        raise ValueError("it is a sparse VMDK with an embedded descriptor (hosted/monolithic "
                         "sparse, as qemu-img and Workstation make by default); convert it to a "
                         "flat disk first: qemu-img convert -O vmdk -o subformat=monolithicFlat "
                         "or vmkfstools -i SRC DST")
    text = head[:DESCRIPTOR_LIMIT].split(b"\x00", 1)[0].decode("utf-8", "replace")
    extents = _ANY_EXTENT.findall(text)
    if "# Disk DescriptorFile" not in text and not _CREATE_TYPE.search(text) or not extents:
        raise ValueError("it is not a VMDK descriptor (no '# Disk DescriptorFile' header or no "
                         "extent line); name the .vmdk descriptor, not its -flat extent")
    parent = _PARENT_CID.search(text)
    if parent and parent.group(1).lower() != "ffffffff":
        raise ValueError(f"it is a delta disk (parentCID={parent.group(1)}): a snapshot's "
                         "child; consolidate the snapshots first")
    ddb = dict(_DDB.findall(text))
    create_type = _CREATE_TYPE.search(text)
    sidecars = _SIDECARS.search(text)
    return DiskFacts(
        capacity_bytes=sum(int(e[1]) for e in extents) * SECTOR,
        create_type=create_type.group(1) if create_type else "",
        extents=tuple((e[2].upper(), e[3]) for e in extents),
        thin=ddb.get("thinProvisioned") == "1" or any(
            e[2].upper() in SPARSE_EXTENTS for e in extents),
        uuid=ddb.get("uuid", ""),
        sidecars=tuple(s.strip() for s in sidecars.group(1).split(",")
                       if s.strip().endswith(".vmfd")) if sidecars else (),
    )


def with_extent_and_uuid(text: str, extent_file: str, disk_uuid: str) -> str:
    """The descriptor of a moved flat disk: its one extent renamed, a UUID if it had none."""
    text = text.split("\x00", 1)[0]
    text = _ANY_EXTENT.sub(lambda m: m.group(0).replace(f'"{m.group(4)}"',
                                                        f'"{extent_file}"'), text, count=1)
    if not re.search(r'^ddb\.uuid\s*=', text, re.MULTILINE):
        text = text.rstrip() + f'\nddb.uuid = "{disk_uuid}"\n'
    return text
