"""Where the milliseconds of a life cycle go: every phase of Create+Mount and Unmount+Remove
timed on its own, the way dockvols did it before issue 15 (a process per loop, probe, mount
and umount step) and the way it does it now (ioctls, a superblock read, mount(2)/umount2),
side by side in this run, with how many times each phase happens per operation."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable

from dockvols_common.atomic import atomic_write_json, fsync_dir
from dockvols_common.locks import NamedLocks
from dockvols_common.loop_table import DELETED, backing_file_path, bound_file
from esx_service.backends.local import LocalBackend
from esx_service.loopdev import KernelLoopDevices
from plugin import superblock, syscalls
from plugin.esx_client import HttpEsxClient
from plugin.filesystem import _MKFS, SystemMounter
from plugin.refcounts import RefCounts

from .environment import (
    PLUGIN_SOCKET,
    BenchEnv,
    DriverClient,
    RawHopServer,
    bench_main,
    life_cycle,
    standalone,
)
from .stats import fmt_ms, md_table, percentile

RUNS = int(os.environ.get("DOCKVOLS_BENCH_PHASE_RUNS", "20"))
HOPS = 300
SIZE = 100 * 1024 * 1024
# A metadata file as esx_service writes it (about this size and shape).
META = {"name": "vol", "datastore": "datastore1", "vmgroup": "_DEFAULT", "status": "attached",
        "options": {"size_mb": 100, "diskformat": "thin", "fstype": "ext4",
                    "access": "read-write", "attach_as": "independent_persistent",
                    "clone_from": None, "vsan_policy_name": None},
        "attach_info": {"kind": "loop", "device": "/dev/loop3"}, "generation": 3,
        "created_at": "2026-11-30T16:00:00+00:00", "created_by": "bench-vm"}

# How often each phase happens per operation, before issue 15 and now (counted by reading
# plugin/volume_manager.py, esx_service/volumes.py and backends/local.py). "hop" = one HTTP
# request and answer.
COUNTS = {
    # phase: (before: per Create+Mount, per Unmount+Remove; now: the same)
    "VolumeDriver hop (dockerd -> plugin)": (2, 2, 2, 2),
    # a connection of its own per change before; the thread's kept-alive one now
    "esx_service hop (plugin -> esx_service)": (2, 2, 2, 2),
    "named lock, uncontended": (4, 4, 4, 4),
    # the volume's lease, one per esx_service call (the quota lease only under a total
    # quota, which the bench's vmgroup has not; counted with a wrapped LeaseManager.acquire).
    # Kept 0.25 s after each call (lease_store.py): in these back-to-back cycles only the
    # Create takes one; Mount, Unmount and Remove reuse it, and the release happens later
    # in the lease keeper's thread. A Mount or Unmount long after the call before takes one.
    "datastore lease, taken and released (multi-host exclusion)": (2, 2, 1, 0),
    "datastore lease kept from the call before, reused": (0, 0, 1, 2),
    # before: `creating`, the descriptor and `detached` at create, `attached`, `detached`,
    # `removing`; now: `detached` at create only
    "crash-safe file write (2 fsyncs)": (4, 2, 1, 0),
    # now: the local backend's attachment records (recovery rebuilds them from the loop
    # table; a thin extent with no block is blank by itself)
    "file write, the file fsynced, its folder not": (0, 0, 1, 1),
    # now: the descriptor, made durable by the `detached` record's fsyncs; a crash may
    # empty it, and it holds nothing kept nowhere else (an empty one reads as the default)
    "file write, no fsync (renamed into place)": (0, 0, 1, 0),
    # now: the create's mark in the lease's staging folder, where the `creating` record was
    # (its name journaled before the extent's, durable with the `detached` record)
    "a create's mark (a folder in the lease's staging folder)": (0, 0, 1, 0),
    # now: the remove's record moved into the lease's staging folder before the disk goes,
    # that folder fsynced, where `removing` was written crash-safe and the record deleted
    "the record moved into the lease's staging folder (folder fsynced)": (0, 0, 0, 1),
    # the plugin's state file: Mount writes it before asking for the attach and with the
    # mount ID; Unmount once, with the detach (two writes before). Crash-safe before; now
    # rewritten in place while it fits in one page, not renamed over
    "plugin's state file write": (2, 2, 2, 1),
    # before: always; now only where data was written (a clone, eagerzeroedthick): a thin
    # extent's inode goes with the `detached` record's fsync
    "fsync of the new extent": (1, 0, 0, 0),
    # attach: is a loop device left on the extent by an interrupted attach? (now: only the
    # devices /proc/partitions lists); detach: which devices to release (now: the one the
    # attach recorded, one sysfs file)
    "loop table look-up (sysfs)": (1, 1, 1, 0),
    "one loop device's backing file (sysfs)": (0, 0, 0, 1),
    "is it mounted? (mount table before, two stats now)": (1, 1, 1, 1),
    "loop set-up": (1, 0, 1, 0),
    # now: a blank disk (made by a create, nothing written to it) is formatted unprobed
    "superblock probe": (1, 0, 0, 0),
    "mkfs.ext4": (1, 0, 1, 0),
    "mount": (1, 0, 1, 0),
    "umount": (0, 1, 0, 1),
    "loop release (and wait until free)": (0, 1, 0, 1),
    # now renamed into the datastore's trash, whose thread unlinks it after the answer
    "the 100 MB extent: unlinked before, into the trash now": (0, 1, 0, 1),
}


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _wait_free(device: str) -> None:
    path = backing_file_path(device)
    pause = 0.001
    while os.path.exists(path):
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


class Cycle:
    """One volume's device life, with every step timed."""

    def __init__(self, root: str, new: bool) -> None:
        self.root, self.new = root, new
        self.loops = KernelLoopDevices()

    def run(self, i: int, times: dict[str, list[float]]) -> None:
        image = os.path.join(self.root, f"{'n' if self.new else 'o'}{i}.img")
        target = image + ".mnt"
        os.makedirs(target, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(SIZE)

        def step(name: str, fn: Callable[[], object]) -> object:
            start = time.perf_counter()
            out = fn()
            times.setdefault(name, []).append(time.perf_counter() - start)
            return out

        if self.new:
            device = str(step("loop set-up", lambda: self.loops.attach(image, False)))
            step("superblock probe", lambda: superblock.probe(device))
        else:
            device = str(step("loop set-up", lambda: _run(
                ["losetup", "--find", "--show", image]).strip()))
            step("superblock probe", lambda: subprocess.run(
                ["blkid", "-p", "-o", "value", "-s", "TYPE", device], capture_output=True))
        step("mkfs.ext4", lambda: _run(_MKFS["ext4"] + ["-L", "bench", device]))
        if self.new:
            step("mount", lambda: syscalls.mount(device, target, "ext4", False))
            step("umount", lambda: syscalls.umount(target))
            step("loop release (and wait until free)",
                 lambda: (self.loops.detach(device, image), _wait_free(device)))
        else:
            step("mount", lambda: _run(["mount", "-t", "ext4", device, target]))
            step("umount", lambda: _run(["umount", target]))
            step("loop release (and wait until free)",
                 lambda: (_run(["losetup", "--detach", device]), _wait_free(device)))
        trash = os.path.join(self.root, ".trash")
        os.makedirs(trash, exist_ok=True)
        gone = os.path.join(trash, os.path.basename(image))
        step("the 100 MB extent: unlinked before, into the trash now",
             (lambda: os.rename(image, gone)) if self.new else (lambda: os.unlink(image)))
        if self.new:
            os.unlink(gone)  # the trash's thread, after the answer
        os.rmdir(target)


def _hops(fn: Callable[[], object], n: int = HOPS) -> list[float]:
    for _ in range(20):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(env: BenchEnv) -> dict:
    old: dict[str, list[float]] = {}
    new: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="phases-", dir=str(env.run_dir)) as root:
        cycles = (Cycle(root, new=False), Cycle(root, new=True))
        driver = DriverClient(PLUGIN_SOCKET)
        whole: dict[str, list[float]] = {}
        for i in range(RUNS + 2):  # interleaved, alternating order; 2 warm-ups
            pair = [(cycles[0], old), (cycles[1], new)]
            if i % 2:
                pair.reverse()
            for cycle, times in pair:
                cycle.run(i, times if i >= 2 else {})
            _whole_cycle(driver, f"ph{i:03d}", whole if i >= 2 else {})
        driver.close()
        metadata = os.path.join(root, "vol.json")
        same = _hops(lambda: atomic_write_json(metadata, META), 50)
        old["crash-safe file write (2 fsyncs)"] = new["crash-safe file write (2 fsyncs)"] = same
        old["file write, the file fsynced, its folder not"] = same
        new["file write, the file fsynced, its folder not"] = _hops(
            lambda: atomic_write_json(metadata, META, sync_dir=False), 50)
        staging = os.path.join(root, "staging")
        os.mkdir(staging)
        marks = iter(range(10**9))
        new["a create's mark (a folder in the lease's staging folder)"] = _hops(
            lambda: os.mkdir(os.path.join(staging, f".mark-create-{next(marks)}")), 50)
        records = []
        for n in range(70):  # 20 warm-ups and 50 timed parks
            records.append(os.path.join(root, f"park{n}.json"))
            atomic_write_json(records[-1], META)

        def park() -> None:
            record = records.pop()
            os.rename(record, os.path.join(staging, os.path.basename(record)))
            fsync_dir(staging)

        new["the record moved into the lease's staging folder (folder fsynced)"] = _hops(
            park, 50)
        fresh = iter(range(10**9))  # the descriptor is a new file
        new["file write, no fsync (renamed into place)"] = _hops(
            lambda: atomic_write_json(f"{metadata}.{next(fresh)}", META, durable=False), 50)
        # the plugin's state file: crash-safe before issue 15, rewritten in place now
        old["plugin's state file write"] = same
        counts = RefCounts(os.path.join(root, "refcounts.json"))
        counts.add("vol@datastore1", "0" * 64)  # the first write replaces the file
        ids = iter(range(10**9))
        # each add writes the file once; the mount IDs are Docker's 64 hex digits
        new["plugin's state file write"] = _hops(
            lambda: counts.add(f"v{next(ids) % 4}@datastore1", "1" * 64), 200)
        extent = os.path.join(root, "extent")

        def new_extent() -> None:
            fd = os.open(extent, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(fd, SIZE)
            os.fsync(fd)
            os.close(fd)

        old["fsync of the new extent"] = new["fsync of the new extent"] = _hops(new_extent, 50)
        locks = NamedLocks()

        def hold() -> None:
            with locks.hold("datastore1/_DEFAULT/vol"):
                pass

        old["named lock, uncontended"] = new["named lock, uncontended"] = _hops(hold, 2000)
        backend = LocalBackend({"datastore1": root})
        ext = os.path.join(root, "dockvols", "_DEFAULT", "vol-flat.vmdk")
        old["loop table look-up (sysfs)"] = _hops(lambda: _loops_on_before(ext), 100)
        new["loop table look-up (sysfs)"] = _hops(lambda: backend._loops_on(ext, True), 100)
        new["one loop device's backing file (sysfs)"] = _hops(
            lambda: bound_file("/dev/loop0"), 100)
        mounts = SystemMounter()
        target = os.path.join(root, "mnt", "vol@datastore1")
        old["is it mounted? (mount table before, two stats now)"] = _hops(
            lambda: target in mounts.mounts_under(os.path.dirname(target)), 100)
        new["is it mounted? (mount table before, two stats now)"] = _hops(
            lambda: mounts.is_mount_point(target), 100)
        taken = _leases(root, keep=0.0)
        old["datastore lease, taken and released (multi-host exclusion)"] = \
            new["datastore lease, taken and released (multi-host exclusion)"] = taken
        # before issue 15's keep on a mounted datastore, each of these took one too
        old["datastore lease kept from the call before, reused"] = taken
        new["datastore lease kept from the call before, reused"] = _leases(root, keep=60.0)
    with RawHopServer(os.path.join(str(env.run_dir), "rawhop.sock")) as raw:
        raw_hop = _hops(raw.call)
    client = DriverClient(PLUGIN_SOCKET)
    driver_hop = _hops(lambda: client.call("Path", {"Name": "no-such-volume"}))
    client.close()
    old["esx_service hop (plugin -> esx_service)"] = _hops(lambda: _esx_status(env.esx_socket))
    kept = HttpEsxClient(f"unix://{env.esx_socket}")
    new["esx_service hop (plugin -> esx_service)"] = _hops(kept.status)
    for side in (old, new):
        side["VolumeDriver hop (dockerd -> plugin)"] = driver_hop
    p50 = {side: {k: percentile(v, 50) * 1000 for k, v in times.items()}
           for side, times in (("old", old), ("new", new))}
    return {"runs": RUNS, "p50_ms": p50, "raw_hop_p50_ms": percentile(raw_hop, 50) * 1000,
            "counts": COUNTS, "totals": _totals(p50),
            "whole_p50_ms": [percentile(whole[k], 50) * 1000 for k in ("up", "down")]}


def _loops_on_before(extent: str) -> list[tuple[str, str]]:
    """The look-up as it was before issue 15's last change: a text-mode open() of every loop
    device's sysfs file, and a realpath of each listed backing file."""
    table = []
    for entry in sorted(os.listdir("/sys/block")):
        if entry.startswith("loop"):
            try:
                with open(backing_file_path(entry), encoding="utf-8",
                          errors="surrogateescape") as f:
                    table.append((f"/dev/{entry}", f.read().rstrip("\n")))
            except OSError:
                continue
    real = os.path.realpath(extent)
    return [(d, b) for d, b in table if os.path.realpath(b) == real
            or (b.endswith(DELETED) and os.path.realpath(b.removesuffix(DELETED)) == real)]


def _whole_cycle(client: DriverClient, name: str, times: dict[str, list[float]]) -> None:
    """One real life cycle at the plugin socket (as bench/floor.py times it): what the
    phases above must add up to, and what they leave out."""
    up, down = life_cycle(client, name)
    times.setdefault("up", []).append(up)
    times.setdefault("down", []).append(down)


def _totals(p50: dict) -> dict[str, list[float]]:
    """Sum over phases of count x p50, per side: [Create+Mount, Unmount+Remove] in ms."""
    def total(side: str, column: int) -> float:
        return sum(counts[column] * p50[side].get(k, 0.0) for k, counts in COUNTS.items())
    return {"old": [total("old", 0), total("old", 1)], "new": [total("new", 2), total("new", 3)]}


def _leases(root: str, keep: float) -> list[float]:
    """What esx_service's ClusterLocks cost per hold on a local datastore (issue 11): each
    hold a take and a release (``keep`` 0), or each reusing the lease kept since the one
    before (issue 15)."""
    from dockvols_common.instance import Instance
    from esx_service.cluster_locks import ClusterLocks
    from esx_service.lease_store import LocalLeaseStore
    from esx_service.leases import LeaseManager

    manager = LeaseManager(LocalLeaseStore(lambda ds: root), Instance("bench"))
    manager.start()
    try:
        locks = ClusterLocks(manager, keep_seconds=keep)

        def hold() -> None:
            with locks.hold("datastore1/_DEFAULT/vol"):
                pass

        try:
            return _hops(hold, 200)
        finally:
            locks.close()
    finally:
        manager.stop()


def _esx_status(socket_path: str) -> None:
    from dockvols_common.http_client import UnixHTTPConnection

    conn = UnixHTTPConnection(socket_path, 10)  # a connection per call, as the plugin did
    try:
        conn.request("GET", "/v1/status")
        json.loads(conn.getresponse().read() or b"{}")
    finally:
        conn.close()


def render(r: dict) -> str:
    rows = []
    totals = r["totals"]
    for phase, (up_was, down_was, up, down) in r["counts"].items():
        o, n = r["p50_ms"]["old"].get(phase, 0.0), r["p50_ms"]["new"].get(phase, 0.0)
        rows.append([phase, f"{up_was} / {up}", f"{down_was} / {down}",
                     fmt_ms(o) if up_was or down_was else "-",
                     fmt_ms(n) if up or down else "-",
                     fmt_ms(up_was * o), fmt_ms(up * n), fmt_ms(down_was * o), fmt_ms(down * n)])
    rows.append(["**sum**", "", "", "", "", f"**{fmt_ms(totals['old'][0])}**",
                 f"**{fmt_ms(totals['new'][0])}**", f"**{fmt_ms(totals['old'][1])}**",
                 f"**{fmt_ms(totals['new'][1])}**"])
    whole = r.get("whole_p50_ms")
    if whole:
        rows.append(["measured end to end now (VolumeDriver calls, as bench/floor.py)", "",
                     "", "", "", "", fmt_ms(whole[0]), "", fmt_ms(whole[1])])
        rows.append(["not in any phase above (measured - sum)", "", "", "", "", "",
                     fmt_ms(whole[0] - totals["new"][0]), "",
                     fmt_ms(whole[1] - totals["new"][1])])
    return "\n".join([
        f"Each device phase timed {r['runs']} times per side (interleaved, after 2 warm-ups) "
        "on a 100 MB sparse file on the datastore's filesystem; hops 300 calls, the file "
        "writes 50 to 200, the lock 2,000. **before** = the way dockvols did it before issue "
        "15 (`losetup --find --show`, `blkid -p`, `mount`, `umount`, `losetup --detach` "
        "processes, a crash-safe write for every record, a lease taken per call, a new "
        "connection per change, the mount table read to know whether a volume is mounted), "
        "**now** = `/dev/loop-control` + LOOP_CONFIGURE, mount(2), umount2(2), LOOP_CLR_FD, "
        "the superblock read only for a disk that may hold data, the file's fsync only "
        "where a crash cannot lose the record or recovery rebuilds it, a kept lease (0.25 s "
        "after each call), the plugin's kept-alive connection to esx_service and its state "
        "file rewritten in place, two stats of the mount point, and the removed extent "
        "renamed into the trash (its unlink runs after the answer, in the trash's thread). "
        "'x C+M' / 'x U+R' = how often the phase happens per Create+Mount / "
        "Unmount+Remove, before / now; the ms columns are per call (p50), then p50 x count "
        "('-': the phase does not happen on that side). The VolumeDriver hop is a `Path` of "
        "an unknown name over a kept-alive connection; the esx_service hop a `GET "
        "/v1/status`, on a new connection before and on the plugin's client now. One raw "
        f"HTTP hop (minimal stdlib server, unix socket, kept alive): "
        f"{fmt_ms(r['raw_hop_p50_ms'])} ms. "
        "The last two rows time real life cycles at the plugin socket, interleaved with the "
        "phases: what is left over is Python between the phases (request parsing and "
        "dispatch in both servers, JSON, logging, the service's name and policy look-ups, "
        "metadata and descriptor reads) and the wait for a core on a loaded machine.",
        "",
        md_table(["phase", "x C+M", "x U+R", "before ms", "now ms", "C+M before",
                  "C+M now", "U+R before", "U+R now"], rows),
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
