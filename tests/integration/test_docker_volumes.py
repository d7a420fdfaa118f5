"""A Docker user's view, through a real dockerd: create, use, share, inspect, remove."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import Docker, make_volume, mounts_under


def run(dv: Docker, volume: str, script: str, *extra: str) -> str:
    return dv.out("run", "--rm", *extra, "-v", f"{volume}:/data", "busybox", "sh", "-c", script)


def test_data_written_by_one_container_is_read_by_the_next(dv: Docker) -> None:
    make_volume(dv, "db", "size=200mb", "fstype=ext4")
    run(dv, "db", "echo hi > /data/f && sync")
    assert run(dv, "db", "cat /data/f") == "hi"


def test_volume_on_named_datastore_lives_in_that_datastore(dv: Docker, run_dir: Path) -> None:
    make_volume(dv, "logs@datastore2")
    run(dv, "logs@datastore2", "echo x > /data/x")
    assert (run_dir / "ds2" / "dockvols" / "_DEFAULT" / "logs.vmdk").exists()
    assert dv.inspect_volume("logs@datastore2")["Status"]["datastore"] == "datastore2"


def test_disk_is_a_real_vmdk_of_the_requested_size(dv: Docker, datastore: Path) -> None:
    make_volume(dv, "sized", "size=300mb", "diskformat=zeroedthick")
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(datastore / "dockvols/_DEFAULT/sized.vmdk")],
        capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == 300 * 1024 * 1024
    assert info["actual-size"] >= 300 * 1024 * 1024  # zeroedthick is allocated up front


def test_thin_disk_is_sparse(dv: Docker, datastore: Path) -> None:
    # Docker's spelling (1g) and the IEC one (1GiB) make the same 1gb disk. One function,
    # not parametrized: managed/test_scenarios.py runs it unchanged with its fixtures.
    for size in ("1gb", "1g", "1GiB"):
        name = f"thin-{size.lower()}"
        make_volume(dv, name, f"size={size}")
        extent = datastore / f"dockvols/_DEFAULT/{name}-flat.vmdk"
        assert extent.stat().st_size == 1024 ** 3
        assert extent.stat().st_blocks * 512 < 16 * 1024 * 1024
        assert dv.inspect_volume(name)["Status"]["capacity"]["size"] == "1gb"


def test_inspect_shows_the_disk_facts(dv: Docker) -> None:
    make_volume(dv, "facts", "size=120mb", "access=read-write", "attach-as=independent_persistent")
    info = dv.inspect_volume("facts")
    status = info["Status"]
    assert info["Driver"] == dv.driver
    assert status["datastore"] == "datastore1"
    assert status["capacity"]["size"] == "120mb"
    assert status["diskformat"] == "thin"
    assert status["fstype"] == "ext4"
    assert status["access"] == "read-write"
    assert status["attach-as"] == "independent_persistent"
    assert status["created by VM"] == "test-vm"
    assert status["attached to VM"] == "detached"
    assert info["CreatedAt"]


def test_inspect_while_in_use_shows_attachment_and_mountpoint(dv: Docker) -> None:
    make_volume(dv, "busy")
    dv("run", "-d", "--name", "holder", "-v", "busy:/data", "busybox", "sleep", "300")
    info = dv.inspect_volume("busy")
    assert info["Status"]["attached to VM"] == "test-vm"
    assert info["Mountpoint"].endswith("/busy@datastore1")


def test_two_containers_share_one_mount(dv: Docker, mount_root: Path) -> None:
    make_volume(dv, "shared")
    dv("run", "-d", "--name", "ca", "-v", "shared:/data", "busybox", "sleep", "300")
    dv("run", "-d", "--name", "cb", "-v", "shared:/data", "busybox", "sleep", "300")
    dv("exec", "ca", "sh", "-c", "echo from-a > /data/a")
    assert dv.out("exec", "cb", "cat", "/data/a") == "from-a"
    assert mounts_under(mount_root) == [str(mount_root / "shared@datastore1")]
    dv("rm", "-f", "ca")
    assert dv.out("exec", "cb", "cat", "/data/a") == "from-a"  # still mounted for b
    dv("rm", "-f", "cb")
    assert mounts_under(mount_root) == []


def test_remove_in_use_fails_then_succeeds_when_unused(dv: Docker) -> None:
    make_volume(dv, "inuse")
    dv("run", "-d", "--name", "user", "-v", "inuse:/data", "busybox", "sleep", "300")
    refused = dv("volume", "rm", "inuse", check=False)
    assert refused.returncode != 0
    assert "in use" in refused.stderr
    dv("rm", "-f", "user")
    dv("volume", "rm", "inuse")
    assert "inuse" not in dv.out("volume", "ls", "-q").split()


def test_read_only_volume_mounts_read_only(dv: Docker) -> None:
    make_volume(dv, "ro", "access=read-only")
    denied = dv("run", "--rm", "-v", "ro:/data", "busybox", "sh", "-c", "echo x > /data/x",
                check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    assert run(dv, "ro", "ls -a /data | grep -c lost+found") == "1"  # formatted, readable


def test_xfs_volume_is_formatted_xfs(dv: Docker) -> None:
    make_volume(dv, "x1", "fstype=xfs", "size=320mb")
    assert run(dv, "x1", "grep ' /data ' /proc/mounts | cut -d' ' -f3") == "xfs"
    run(dv, "x1", "echo data > /data/f")
    assert run(dv, "x1", "cat /data/f") == "data"


def test_clone_from_copies_the_source_data(dv: Docker) -> None:
    make_volume(dv, "origin", "size=150mb")
    run(dv, "origin", "echo original > /data/f && sync")
    make_volume(dv, "copy", "clone-from=origin")
    assert run(dv, "copy", "cat /data/f") == "original"
    run(dv, "copy", "echo changed > /data/f")
    assert run(dv, "origin", "cat /data/f") == "original"
    assert dv.inspect_volume("copy")["Status"]["clone-from"] == "origin"


def test_volume_ls_lists_each_volume_once_by_its_created_name(dv: Docker) -> None:
    make_volume(dv, "one")
    make_volume(dv, "two@datastore2")
    names = dv.out("volume", "ls", "-q", "--filter", f"driver={dv.driver}").split()
    assert sorted(names) == ["one", "two@datastore2"]


def test_create_of_existing_volume_is_idempotent(dv: Docker) -> None:
    make_volume(dv, "again", "size=150mb")
    make_volume(dv, "again", "size=150mb")
    assert dv.out("volume", "ls", "-q").split().count("again") == 1
