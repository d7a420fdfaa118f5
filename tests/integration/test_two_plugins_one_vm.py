"""Two plugins on one VM (a managed plugin beside `make run`'s, or two dockerds), both
talking to esx_service as the same VM: neither releases a disk the other attached.

The integration suite's managed plugin is such a sibling (session-scoped, on the suite's
esx.sock, so VM test-vm too). Its reconcile took every disk attached to test-vm that it had
not mounted itself for an orphan and detached it: a disk between the other plugin's attach
and its mount lost its loop device under e2fsck, resize2fs and mount(2) (EIO, "EXT4-fs
(loop0): unable to read superblock": the mount after the offline ext4 grow in
test_resize.py), and a mounted one got a detach that set its loop device's autoclear and
held the volume's lock for 5 s."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Daemon, wait_for
from esx_service.backends.local import DETACH_WAIT

from .conftest import (
    DRIVER,
    RECONCILE_PERIOD,
    Docker,
    make_volume,
    plugin_daemon,
    restart_plugin_and_wait_for_recovery,
)

BIN = Path(sys.executable).parent
SIBLING = f"{DRIVER}-sibling"
# Three of the sibling's reconcile passes: the window they used to strike in, held open.
STALL_S = 3 * RECONCILE_PERIOD


@pytest.fixture
def sibling(run_dir: Path, esx: Daemon, docker: Docker) -> Iterator[Daemon]:
    """A second plugin on the same esx socket (the same VM), reconciling every 2 s."""
    daemon = plugin_daemon(run_dir, docker, SIBLING, run_dir / "esx.sock",
                           run_dir / "mnt-sibling")
    daemon.start()
    wait_for(lambda: "recovery done" in daemon.log_path.read_text(errors="replace"), 60,
             "the sibling plugin's recovery")
    yield daemon
    daemon.stop()


def passes(sibling: Daemon) -> int:
    return sibling.log_path.read_text(errors="replace").count("reconcile pass over")


def detaches_of(esx: Daemon, volume: str) -> int:
    """Detach requests the service served for ``volume`` (by name or name@datastore)."""
    return len(re.findall(rf"op=detach volume={re.escape(volume)}(?:@\S+)? ",
                          esx.log_path.read_text(errors="replace")))


@pytest.mark.parametrize("stall_at", ["plugin.mount.attached", "plugin.resize.grown"])
def test_a_sibling_plugin_leaves_a_disk_alone_between_attach_and_mount(
        dv: Docker, plugin: Daemon, esx: Daemon, run_dir: Path, sibling: Daemon,
        stall_at: str) -> None:
    """Held between the service's attach and this plugin's mount: before mkfs on first use,
    and after the offline e2fsck + resize2fs of a disk grown while detached (then mount(2)
    met an unbound loop device: EIO, "unable to read superblock")."""
    name = stall_at.rsplit(".", 1)[-1]
    make_volume(dv, name, "size=100mb")
    if stall_at == "plugin.resize.grown":
        dv("run", "--rm", "-v", f"{name}:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        grown = subprocess.run([str(BIN / "dockvols-admin"), "--socket",
                                str(run_dir / "admin.sock"), "volume", "resize", "--volume",
                                name, "--size", "300mb"], capture_output=True, text=True)
        assert "grows at the next mount" in grown.stdout, grown.stderr
    restart_plugin_and_wait_for_recovery(plugin, {"DOCKVOLS_FAULT_POINTS": f"{stall_at}={STALL_S}"})
    try:
        before = passes(sibling)
        out = dv.out("run", "--rm", "-v", f"{name}:/data", "busybox", "sh", "-c",
                     "echo kept > /data/f && cat /data/f && df -k /data")
        assert passes(sibling) >= before + 2  # it looked while the disk was attached
        assert out.splitlines()[0] == "kept"
        if stall_at == "plugin.resize.grown":
            assert int(out.splitlines()[-1].split()[1]) > 200 * 1024  # grown offline
    finally:
        restart_plugin_and_wait_for_recovery(plugin)
    # only this plugin's own detaches, one per Unmount
    assert detaches_of(esx, name) == (2 if stall_at == "plugin.resize.grown" else 1)


def test_a_sibling_plugin_leaves_a_mounted_disk_alone(
        dv: Docker, esx: Daemon, sibling: Daemon) -> None:
    make_volume(dv, "mounted", "size=100mb")
    dv("run", "-d", "--name", "holder", "-v", "mounted:/data", "busybox", "sleep", "300")
    before = passes(sibling)
    wait_for(lambda: passes(sibling) >= before + 2, 10 * RECONCILE_PERIOD,
             "two reconcile passes of the sibling plugin")
    time.sleep(DETACH_WAIT + 0.5)  # a detach those passes started has ended and is logged
    assert detaches_of(esx, "mounted") == 0
    assert dv.out("exec", "holder", "sh", "-c", "echo still > /data/f && cat /data/f") == "still"
    dv("rm", "-f", "holder")
    wait_for(lambda: detaches_of(esx, "mounted") == 1, 20, "this plugin's detach")
