"""When the datastore is full, or mkfs or mount fail in the guest: a clean error, and no
residue (no half disk, no mount, no loop device, the volume still usable afterwards)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.processes import Daemon, python_daemon, wait_for

from .conftest import DRIVER, Docker, layout_files, loops_on, mounts_under, plugin_daemon


@pytest.fixture(scope="module")
def small_datastore(run_dir: Path) -> Iterator[Path]:
    path = run_dir / "small-ds"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def small_esx(run_dir: Path, small_datastore: Path) -> Iterator[Daemon]:
    sock = str(run_dir / "esx-small.sock")
    daemon = python_daemon("esx-small", "esx_service", {
        "DOCKVOLS_SOCKET": sock, "DOCKVOLS_DATA_DIR": str(run_dir / "small-data"),
        "DOCKVOLS_DATASTORES": f"tiny={small_datastore}", "DOCKVOLS_VM_NAME": "test-vm",
        "DOCKVOLS_ADMIN_SOCKET": str(run_dir / "admin-small.sock"), "DOCKVOLS_CONFIG": "",
    }, run_dir / "esx-small.log", sock)
    daemon.start()
    yield daemon
    daemon.stop()


def residue(datastore: Path) -> list[str]:
    """What a failure left, but for the trash: a disk undone is freed after the answer."""
    return sorted(p.name for p in layout_files(datastore))


def test_full_datastore_refuses_thick_disks_and_leaves_nothing(
        small_esx: Daemon, small_datastore: Path) -> None:
    from plugin.errors import ServiceError
    from plugin.esx_client import HttpEsxClient

    client = HttpEsxClient(f"unix://{small_esx.ready_path}", timeout=30)

    def create(i: int) -> str:
        try:
            client.create(f"thick{i}", {"size": "14mb", "diskformat": "zeroedthick"})
            return "ok"
        except ServiceError as exc:
            assert "tiny" in exc.message and "free" in exc.message or "space" in exc.message
            return exc.code

    with ThreadPoolExecutor(5) as pool:  # 5 x 14mb on 48mb: some must be refused
        outcomes = list(pool.map(create, range(5)))
    made = [f"thick{i}" for i, o in enumerate(outcomes) if o == "ok"]
    assert set(outcomes) <= {"ok", "InsufficientSpace"}
    assert "InsufficientSpace" in outcomes and made
    expected = sorted(f"{n}{suffix}" for n in made for suffix in (".json", ".vmdk", "-flat.vmdk"))
    assert residue(small_datastore) == expected  # the refused ones left no file at all
    for name in made:
        client.remove(name)
    # A remove moves the record into its lease's staging folder, which goes with the lease
    # when the keeper releases it, a quarter second after the operation (local backend).
    wait_for(lambda: residue(small_datastore) == [], 5, "the removes' leases to be released")


def stub_dir(run_dir: Path, name: str, tools: dict[str, str]) -> Path:
    path = run_dir / name
    path.mkdir(exist_ok=True)
    for tool, script in tools.items():
        (path / tool).write_text("#!/bin/sh\n" + script + "\n")
        (path / tool).chmod(0o755)
    return path


@pytest.fixture
def broken_plugin(run_dir: Path, esx: Daemon,
                  docker: Docker) -> Iterator[tuple[Daemon, str, Path]]:
    """A second plugin whose mkfs.ext4 is a failing stub on PATH."""
    driver = f"{DRIVER}-no-mkfsext4"
    stubs = stub_dir(run_dir, "stubs-mkfs.ext4", {
        "mkfs.ext4": 'echo "mkfs.ext4: simulated failure" >&2; exit 32'})
    mount_root = run_dir / f"mnt-{driver}"
    daemon = plugin_daemon(run_dir, docker, driver, run_dir / "esx.sock", mount_root)
    daemon.env["PATH"] = f"{stubs}:{daemon.env['PATH']}"
    daemon.start()
    yield daemon, driver, mount_root
    daemon.stop()


def assert_failed_cleanly(dv: Docker, name: str, mount_root: Path, run_dir: Path) -> None:
    assert mounts_under(mount_root) == []
    assert loops_on(run_dir) == []  # detached again
    assert dv.inspect_volume(name)["Status"]["attached to VM"] == "detached"
    dv("volume", "rm", name)


def test_guest_mkfs_failure_is_clean(
        dv: Docker, broken_plugin: tuple[Daemon, str, Path], run_dir: Path) -> None:
    _, driver, mount_root = broken_plugin
    dv("volume", "create", "-d", driver, "fragile")
    failed = dv("run", "--rm", "-v", "fragile:/data", "busybox", "true", check=False)
    assert failed.returncode != 0
    assert "simulated failure" in failed.stderr and "mkfs" in failed.stderr
    assert_failed_cleanly(dv, "fragile", mount_root, run_dir)


def test_kernel_refusing_the_mount_is_clean_and_names_the_reason(
        dv: Docker, run_dir: Path, datastore: Path, mount_root: Path) -> None:
    # The plugin mounts with mount(2), so no stub on PATH can fail it: a real refusal
    # instead. An ext4 volume whose superblock is damaged (magic intact, so it is not
    # taken for a blank disk and never reformatted) is refused by the kernel itself.
    dv("volume", "create", "-d", DRIVER, "-o", "fstype=ext4", "damaged")
    dv("run", "--rm", "-v", "damaged:/data", "busybox", "sh", "-c", "echo x > /data/f")
    extent = datastore / "dockvols" / "_DEFAULT" / "damaged-flat.vmdk"
    with open(extent, "r+b") as disk:
        disk.seek(1024)  # s_inodes_count and s_blocks_count_lo: zero is no geometry at all
        disk.write(bytes(8))
        disk.seek(1024 + 0x38)
        assert disk.read(2) == b"\x53\xef"  # the ext4 magic is still there
    failed = dv("run", "--rm", "-v", "damaged:/data", "busybox", "true", check=False)
    assert failed.returncode != 0
    assert "mount -t ext4" in failed.stderr and "errno E" in failed.stderr
    with open(extent, "rb") as disk:  # not reformatted: the damage is still there to repair
        disk.seek(1024)
        assert disk.read(8) == bytes(8)
    assert_failed_cleanly(dv, "damaged", mount_root, run_dir)


def test_a_retry_after_a_failed_first_mount_formats_and_works(
        dv: Docker, run_dir: Path, esx: Daemon, docker: Docker) -> None:
    # mkfs fails once (the stub deletes itself), as a transient guest failure would
    stubs = stub_dir(run_dir, "stubs-once", {
        "mkfs.ext4": 'rm -f -- "$0"; echo "mkfs.ext4: simulated failure" >&2; exit 1'})
    driver = f"{DRIVER}-flaky"
    mount_root = run_dir / "mnt-flaky"
    flaky = plugin_daemon(run_dir, docker, driver, run_dir / "esx.sock", mount_root)
    flaky.env["PATH"] = f"{stubs}:{flaky.env['PATH']}"
    flaky.start()
    try:
        dv("volume", "create", "-d", driver, "retry-me")
        first = dv("run", "--rm", "-v", "retry-me:/data", "busybox", "true", check=False)
        assert first.returncode != 0 and "simulated failure" in first.stderr
        dv("run", "--rm", "-v", "retry-me:/data", "busybox", "sh", "-c", "echo ok > /data/f")
        assert dv.out("run", "--rm", "-v", "retry-me:/data", "busybox", "cat",
                      "/data/f") == "ok"
        assert mounts_under(mount_root) == []
        dv("volume", "rm", "retry-me")
    finally:
        flaky.stop()
