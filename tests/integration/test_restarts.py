"""Restarts and crashes of the plugin and esx_service lose nothing and leak nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from bench.processes import Daemon, wait_for
from dockvols_common.http_client import UnixHTTPConnection

from .conftest import (
    DRIVER,
    PLUGIN_SOCKET,
    RECONCILE_PERIOD,
    Docker,
    loops_on,
    make_volume,
    mounts_under,
    restart_plugin_and_wait_for_recovery,
)


def test_plugin_kill9_and_restart_keeps_running_containers_volume(
        dv: Docker, plugin: Daemon, mount_root: Path, run_dir: Path) -> None:
    make_volume(dv, "survivor")
    dv("run", "-d", "--name", "svc", "-v", "survivor:/data", "busybox", "sh", "-c",
       "echo before > /data/f; sleep 300")
    plugin.kill9()
    restart_plugin_and_wait_for_recovery(plugin)
    assert mounts_under(mount_root) == [str(mount_root / "survivor@datastore1")]
    assert dv.out("exec", "svc", "cat", "/data/f") == "before"
    dv("exec", "svc", "sh", "-c", "echo after > /data/g")
    dv("stop", "-t", "1", "svc")
    assert mounts_under(mount_root) == []  # the last user stopped: unmounted
    assert loops_on(run_dir) == []  # and detached
    dv("rm", "svc")
    assert dv.out("run", "--rm", "-v", "survivor:/data", "busybox", "cat", "/data/g") == "after"


def test_plugin_restart_unmounts_volumes_no_container_uses(
        dv: Docker, plugin: Daemon, mount_root: Path, run_dir: Path) -> None:
    make_volume(dv, "orphaned")
    dv("run", "-d", "--name", "gone", "-v", "orphaned:/data", "busybox", "sleep", "300")
    plugin.kill9()
    dv("rm", "-f", "gone")  # its Unmount cannot reach the dead plugin
    assert mounts_under(mount_root) == [str(mount_root / "orphaned@datastore1")]
    restart_plugin_and_wait_for_recovery(plugin)
    assert mounts_under(mount_root) == []
    assert loops_on(run_dir) == []
    dv("volume", "rm", "orphaned")


def test_esx_service_restart_keeps_every_volume(dv: Docker, esx: Daemon) -> None:
    for name in ("keep1", "keep2", "keep3@datastore2"):
        make_volume(dv, name)
    dv("run", "--rm", "-v", "keep1:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    esx.restart()
    names = dv.out("volume", "ls", "-q").split()
    assert {"keep1", "keep2", "keep3@datastore2"} <= set(names)
    assert dv.out("run", "--rm", "-v", "keep1:/data", "busybox", "cat", "/data/f") == "kept"


def test_esx_service_restart_while_a_volume_is_mounted(dv: Docker, esx: Daemon) -> None:
    make_volume(dv, "live")
    dv("run", "-d", "--name", "writer", "-v", "live:/data", "busybox", "sleep", "300")
    esx.restart()
    assert dv.inspect_volume("live")["Status"]["attached to VM"] == "test-vm"
    dv("exec", "writer", "sh", "-c", "echo still > /data/f")
    dv("rm", "-f", "writer")
    assert dv.inspect_volume("live")["Status"]["attached to VM"] == "detached"


def test_volumes_stay_listed_while_esx_service_is_down(dv: Docker, esx: Daemon) -> None:
    make_volume(dv, "cached")
    dv.inspect_volume("cached")
    esx.stop()
    try:
        assert "cached" in dv.out("volume", "ls", "-q").split()
        assert "stale" in dv.inspect_volume("cached")["Status"]
    finally:
        esx.start()


def test_service_killed_mid_create_leaves_no_half_volume(
        dv: Docker, esx: Daemon, datastore: Path) -> None:
    for point in ("create.metadata_written", "create.disk_written"):
        esx.restart({"DOCKVOLS_FAULT_POINTS": point})
        failed = dv("volume", "create", "-d", DRIVER, "half", check=False)
        assert failed.returncode != 0
        wait_for(lambda: not esx.running, 10, "esx_service to die at the fault point")
        esx.start()
        assert "half" not in dv.out("volume", "ls", "-q").split()
        assert not list((datastore / "dockvols" / "_DEFAULT").glob("half*"))
        make_volume(dv, "half")  # a retry succeeds
        dv("volume", "rm", "half")


def test_service_killed_mid_remove_finishes_the_remove(
        dv: Docker, esx: Daemon, datastore: Path) -> None:
    make_volume(dv, "goner")
    esx.restart({"DOCKVOLS_FAULT_POINTS": "remove.marked"})
    assert dv("volume", "rm", "goner", check=False).returncode != 0
    wait_for(lambda: not esx.running, 10, "esx_service to die at the fault point")
    esx.start()
    assert not list((datastore / "dockvols" / "_DEFAULT").glob("goner*"))
    assert "goner" not in dv.out("volume", "ls", "-q").split()


def test_service_killed_after_attach_releases_the_loop_device(
        dv: Docker, esx: Daemon, run_dir: Path) -> None:
    make_volume(dv, "halfattached")
    esx.restart({"DOCKVOLS_FAULT_POINTS": "attach.disk_attached"})
    failed = dv("run", "--rm", "-v", "halfattached:/data", "busybox", "true", check=False)
    assert failed.returncode != 0
    wait_for(lambda: not esx.running, 10, "esx_service to die at the fault point")
    esx.start()
    assert loops_on(run_dir) == []
    meta = json.loads((run_dir / "datastores/datastore1/dockvols/_DEFAULT/halfattached.json")
                      .read_text())
    assert meta["status"] == "detached"


def test_service_killed_after_detach_records_the_volume_detached(
        dv: Docker, esx: Daemon, run_dir: Path, mount_root: Path) -> None:
    make_volume(dv, "halfdetached")
    dv("run", "--rm", "-v", "halfdetached:/data", "busybox", "sh", "-c", "echo x > /data/f")
    esx.restart({"DOCKVOLS_FAULT_POINTS": "detach.disk_detached"})
    dv("run", "--rm", "-v", "halfdetached:/data", "busybox", "true", check=False)
    wait_for(lambda: not esx.running, 10, "esx_service to die at the fault point")
    assert loops_on(run_dir) == []  # the detach itself finished before the crash
    esx.start()
    assert mounts_under(mount_root) == []
    assert dv.inspect_volume("halfdetached")["Status"]["attached to VM"] == "detached"
    assert dv.out("run", "--rm", "-v", "halfdetached:/data", "busybox", "cat",
                  "/data/f") == "x"



def test_plugin_restart_while_containers_come_and_go_counts_no_container_twice(
        dv: Docker, plugin: Daemon, mount_root: Path, run_dir: Path) -> None:
    """Issue 10's sequence: A and C use v; the plugin is killed; C stops while it is down;
    the plugin restarts; B mounts v; A stops; B stops: v is unmounted, detached, removable."""
    make_volume(dv, "comego")
    for name in ("ctr-a", "ctr-c"):
        dv("run", "-d", "--name", name, "-v", "comego:/data", "busybox", "sleep", "300")
    plugin.kill9()
    dv("rm", "-f", "ctr-c")  # its Unmount cannot reach the dead plugin
    restart_plugin_and_wait_for_recovery(plugin)
    dv("run", "-d", "--name", "ctr-b", "-v", "comego:/data", "busybox", "sleep", "300")
    dv("rm", "-f", "ctr-a")
    assert mounts_under(mount_root) == [str(mount_root / "comego@datastore1")]
    assert dv.out("exec", "ctr-b", "sh", "-c", "echo b > /data/f; cat /data/f") == "b"
    dv("rm", "-f", "ctr-b")
    assert mounts_under(mount_root) == []
    assert loops_on(run_dir) == []
    dv("volume", "rm", "comego")  # not "in use by 1 mount(s)"


def test_a_disk_the_service_attaches_after_the_plugins_recovery_is_detached(
        dv: Docker, plugin: Daemon, esx: Daemon, mount_root: Path, run_dir: Path) -> None:
    """The plugin dies mid-Mount while the service is still attaching; the new plugin's
    recovery finds nothing attached; the attach lands later: the reconcile detaches it."""
    make_volume(dv, "lateattach")
    esx.restart({"DOCKVOLS_FAULT_POINTS": "attach.before_disk=8"})
    # dockerd would retry a Mount whose connection broke; call the plugin directly
    mount = threading.Thread(target=_post, args=(PLUGIN_SOCKET, "/VolumeDriver.Mount",
                                                 {"Name": "lateattach", "ID": "m1"}))
    mount.start()
    wait_for(lambda: "attach.before_disk reached" in esx.log_tail(20), 30,
             "the service to stall inside attach")
    plugin.kill9()
    restart_plugin_and_wait_for_recovery(plugin)
    assert loops_on(run_dir) == []  # recovery ran before the attach landed
    wait_for(lambda: bool(loops_on(run_dir)), 20, "the stalled attach to land")
    wait_for(lambda: not loops_on(run_dir), RECONCILE_PERIOD * 3 + 10,
             "the reconcile to detach the late attach")
    mount.join(5)
    assert mounts_under(mount_root) == []
    # the pass logs once its detach has returned, a moment after the loop device went
    wait_for(lambda: "reconcile: {'detached': 1}" in plugin.log_path.read_text(
        errors="replace"), 10, "the reconcile to report the detach")
    esx.restart()
    assert dv.inspect_volume("lateattach")["Status"]["attached to VM"] == "detached"


def _post(socket_path: str, path: str, body: dict) -> None:
    conn = UnixHTTPConnection(socket_path, 60)
    try:
        conn.request("POST", path, body=json.dumps(body).encode())
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # the plugin is killed under it
    finally:
        conn.close()


ABANDON_GRACE = 4 * RECONCILE_PERIOD


def test_a_disk_whose_attach_record_was_lost_is_released_after_the_grace(
        dv: Docker, plugin: Daemon, mount_root: Path, run_dir: Path) -> None:
    """kill -9 of the plugin between the attach and the mount, and its state file found
    unreadable at the restart (a guest crash on vSphere: the disk stays attached, the file
    was never synced): recovery leaves the unrecorded disk alone (another plugin on this VM
    may be mounting it) and the reconcile releases it once it has been unclaimed for the
    grace. Without the fallback it stayed attached to this VM for ever."""
    make_volume(dv, "abandoned")
    restart_plugin_and_wait_for_recovery(
        plugin, {"DOCKVOLS_FAULT_POINTS": "plugin.mount.attached"})
    # dockerd would retry a Mount whose connection broke; call the plugin directly
    _post(PLUGIN_SOCKET, "/VolumeDriver.Mount", {"Name": "abandoned", "ID": "m1"})
    wait_for(lambda: not plugin.running, 10, "the plugin to die at plugin.mount.attached")
    assert len(loops_on(run_dir)) == 1
    state = run_dir / f"state-{DRIVER}" / "refcounts.json"
    assert "abandoned@datastore1" in state.read_text()  # recorded before the attach
    state.write_text("{not json")
    try:
        restart_plugin_and_wait_for_recovery(
            plugin, {"DOCKVOLS_RECONCILE_GRACE": str(ABANDON_GRACE)})
        recovered_at = time.monotonic()
        assert len(loops_on(run_dir)) == 1  # recovery left it to the reconcile's grace
        log = plugin.log_path.read_text(errors="replace")
        passes = log.count("reconcile pass over")
        wait_for(lambda: plugin.log_path.read_text(errors="replace").count(
            "reconcile pass over") >= passes + 2, 10 * RECONCILE_PERIOD, "two reconcile passes")
        if time.monotonic() - recovered_at < ABANDON_GRACE:
            assert len(loops_on(run_dir)) == 1  # not before the grace
        wait_for(lambda: not loops_on(run_dir), ABANDON_GRACE + 5 * RECONCILE_PERIOD,
                 "the reconcile to release the abandoned disk")
        assert time.monotonic() - recovered_at >= ABANDON_GRACE
        assert mounts_under(mount_root) == []
        wait_for(lambda: "released as abandoned" in plugin.log_path.read_text(
            errors="replace"), 10, "the reconcile's log line")
        assert "volume=abandoned@datastore1 attached to this VM for" in \
            plugin.log_path.read_text(errors="replace")
        assert dv.inspect_volume("abandoned")["Status"]["attached to VM"] == "detached"
    finally:
        restart_plugin_and_wait_for_recovery(plugin)
