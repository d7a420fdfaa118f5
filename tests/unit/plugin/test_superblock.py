"""The superblock probe on image files (no root): fresh, ext, XFS, and anything else, which
must go to blkid rather than be taken for an empty disk."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from plugin import superblock

SIZE = 8 * 1024 * 1024


def _image(tmp_path, name="disk.img"):
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_fresh_sparse_disk_has_no_filesystem(tmp_path):
    assert superblock.probe(str(_image(tmp_path))) is None


def test_ext_magic_reads_as_ext4(tmp_path):
    path = _image(tmp_path)
    _poke(path, 1024 + 0x38, b"\x53\xef")
    assert superblock.probe(str(path)) == "ext4"


def test_xfs_magic_reads_as_xfs(tmp_path):
    path = _image(tmp_path)
    _poke(path, 0, b"XFSB")
    assert superblock.probe(str(path)) == "xfs"


@pytest.mark.parametrize("offset", [510, 64 * 1024 + 64, SIZE - 4096, SIZE - 1])
def test_any_other_data_near_either_end_is_unknown_not_empty(tmp_path, offset):
    # an MBR signature, a btrfs superblock, an md superblock at the end: blkid must decide
    path = _image(tmp_path)
    _poke(path, offset, b"\x55")
    assert superblock.probe(str(path)) == superblock.UNKNOWN


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed")
def test_a_real_mkfs_ext4_image_reads_as_ext4(tmp_path):
    path = _image(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    assert superblock.probe(str(path)) == "ext4"


@pytest.mark.parametrize("size", [4096, 300 * 1024])
def test_a_disk_smaller_than_two_spans_is_read_whole(tmp_path, size):
    # the spans overlap or the tail is short: zeros still mean fresh, a byte still counts
    path = tmp_path / "small.img"
    with open(path, "wb") as f:
        f.truncate(size)
    assert superblock.probe(str(path)) is None
    _poke(path, size - 1, b"\x01")
    assert superblock.probe(str(path)) == superblock.UNKNOWN
