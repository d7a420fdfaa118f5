"""Disks dockvols did not make, adopted with the real `dockvols-admin` and used through a real
dockerd: a qemu-img made VMDK holding an ext4 filesystem, and a vDVS-shaped folder tree. The
data on them must survive: the plugin probes before mkfs and never formats them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from bench.processes import Daemon

from .conftest import Docker


def admin(run_dir: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dockvols-admin"), *argv,
                           "--socket", str(run_dir / "admin.sock")],
                          capture_output=True, text=True, timeout=120)


def qemu_disk(tmp: Path, target: Path, text: str, size: str = "64M") -> None:
    """An ext4 filesystem holding hello.txt, converted by qemu-img to a flat VMDK
    (descriptor ``target`` plus ``<stem>-flat.vmdk`` beside it)."""
    content = tmp / "content"
    content.mkdir(exist_ok=True)
    (content / "hello.txt").write_text(text)
    raw = tmp / "raw.img"
    raw.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(raw)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(raw)], check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat",
                    str(raw), str(target)], check=True)


def read(dv: Docker, volume: str, path: str = "/data/hello.txt") -> str:
    return dv.out("run", "--rm", "--mount", f"type=volume,source={volume},target=/data,"
                  f"volume-driver={dv.driver}", "busybox", "cat", path)


def test_a_qemu_img_vmdk_is_imported_and_a_container_reads_its_file(
        dv: Docker, esx: Daemon, run_dir: Path, datastore: Path, tmp_path: Path) -> None:
    qemu_disk(tmp_path, datastore / "made by qemu" / "disk.vmdk", "hello from qemu-img\n")
    done = admin(run_dir, "volume", "import", "--path", "[DATASTORE1] made by qemu/disk.vmdk",
                 "--name", "old data")
    assert done.returncode == 0, done.stderr
    assert "as volume old data@datastore1" in done.stdout
    assert not (datastore / "made by qemu" / "disk-flat.vmdk").exists()  # moved, not copied
    info = dv.inspect_volume("old data")
    assert info["Status"]["capacity"]["size"] == "64mb"
    assert read(dv, "old data") == "hello from qemu-img"
    # mounted twice more (detach recorded the filesystem in between): still the same data
    assert read(dv, "old data") == "hello from qemu-img"
    again = admin(run_dir, "volume", "import", "--path", "[datastore1] made by qemu/disk.vmdk",
                  "--name", "other")
    assert again.returncode == 1 and "no such file" in again.stderr


def test_vdvs_volumes_are_adopted_from_their_folders_and_keep_their_data(
        dv: Docker, esx: Daemon, run_dir: Path, tmp_path: Path) -> None:
    ds2 = run_dir / "ds2"
    tenant = ds2 / "dockvols" / "11111111-1111-1111-1111-111111111111"
    qemu_disk(tmp_path, tenant / "legacy vol.vmdk", "kept by vDVS\n")
    (tenant / "legacy vol-5e2a.vmfd").write_text(json.dumps(
        {"status": "detached", "volOpts": {"fstype": "ext4", "access": "read-write"}}))
    dry = admin(run_dir, "volume", "import", "--from-vdvs", "--datastore", "datastore2",
                "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would adopt [datastore2] dockvols/11111111-1111-1111-1111-111111111111/" \
           "legacy vol.vmdk as legacy vol@datastore2" in dry.stdout
    assert (tenant / "legacy vol.vmdk").exists()
    done = admin(run_dir, "volume", "import", "--from-vdvs", "--datastore", "datastore2")
    assert done.returncode == 0, done.stderr
    assert "fstype=ext4 from vDVS side-car" in done.stdout
    assert "legacy vol@datastore2" in dv.out("volume", "ls", "-q").splitlines()
    assert read(dv, "legacy vol@datastore2") == "kept by vDVS"


def test_a_create_meeting_a_vdvs_disk_leaves_it_and_says_how_to_adopt_it(
        dv: Docker, esx: Daemon, run_dir: Path, datastore: Path, tmp_path: Path) -> None:
    """A vDVS volume not yet imported sits where `docker volume create` of its name would put
    the disk: the create is refused with what to do, the disk keeps its data, and the import
    the message names adopts it."""
    disk = datastore / "dockvols" / "_DEFAULT" / "waiting.vmdk"
    qemu_disk(tmp_path, disk, "still vDVS's\n")
    extent = disk.with_name("waiting-flat.vmdk")
    before = extent.read_bytes()
    refused = dv("volume", "create", "-d", dv.driver, "waiting", check=False)
    assert refused.returncode != 0
    assert "cannot create volume waiting: disk file" in refused.stderr
    named = "dockvols-admin volume import --path '[datastore1] " \
            "dockvols/_DEFAULT/waiting.vmdk' --name waiting"
    assert f"`{named}` adopts it" in refused.stderr
    assert extent.read_bytes() == before and disk.exists()
    assert not disk.with_name("waiting.json").exists()
    assert "waiting" not in dv.out("volume", "ls", "-q").splitlines()
    done = admin(run_dir, *shlex.split(named)[1:])  # the command the message names
    assert done.returncode == 0, done.stderr
    assert "as volume waiting@datastore1" in done.stdout
    assert read(dv, "waiting") == "still vDVS's"
