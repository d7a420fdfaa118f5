"""Bad input is refused with an error naming the bad value and what is allowed, and nothing
is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import DRIVER, Docker, layout_files


def disk_files(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots for p in layout_files(root))


@pytest.mark.parametrize("name, opts, expected", [
    ("bad1", ["size=10xb"], ["'10xb'", "X[mb|gb|tb]"]),
    ("bad2", ["size=0mb"], ["'0mb'", "positive integer"]),
    ("bad3", ["colour=blue"], ["'colour'", "size=", "diskformat=", "fstype="]),
    ("bad4", ["fstype=ntfs"], ["'ntfs'", "ext4, xfs"]),
    ("bad5", ["diskformat=fat"], ["'fat'", "thin, zeroedthick, eagerzeroedthick"]),
    ("bad6", ["access=sometimes"], ["'sometimes'", "read-write, read-only"]),
    ("bad7", ["attach-as=glued"], ["'glued'", "persistent, independent_persistent"]),
    ("bad8", ["fstype=xfs", "size=100mb"], ["xfs", "300mb"]),
    ("bad9", ["size=900tb"], ["'900tb'", "62tb"]),
    ("bad10", ["clone-from=nosuchvolume"], ["nosuchvolume", "does not exist"]),
    ("bad11", ["size=20tb"], ["of 20tb", "free"]),
    ("bad12@nowhere", [], ["'nowhere'", "datastore1", "datastore2", "default datastore1"]),
    ("bad13-000001", [], ["bad13-000001", "suffix"]),
    ("x" * 101, [], ["longer than 100"]),
])
def test_bad_create_names_the_problem_and_creates_nothing(
        dv: Docker, datastore: Path, run_dir: Path, name: str, opts: list[str],
        expected: list[str]) -> None:
    before = disk_files(datastore, run_dir / "ds2")
    args = ["volume", "create", "-d", DRIVER]
    for opt in opts:
        args += ["-o", opt]
    failed = dv(*args, name, check=False)
    assert failed.returncode != 0
    for fragment in expected:
        assert fragment in failed.stderr
    assert disk_files(datastore, run_dir / "ds2") == before
    assert name not in dv.out("volume", "ls", "-q").split()


def test_name_with_path_separator_is_refused(dv: Docker, datastore: Path) -> None:
    failed = dv("volume", "create", "-d", DRIVER, "../etc", check=False)
    assert failed.returncode != 0
    assert "invalid volume name" in failed.stderr
    assert not (datastore / "etc").exists()
