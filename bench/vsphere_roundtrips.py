"""vSphere API round trips per volume operation, against vcsim, through the real volume layer.

Builds tests/vcsim (offline), starts it on 127.0.0.1, and runs create, attach, detach, list
and remove through VolumeService on the vsphere backend (metadata over the /folder HTTP
interface, as from a remote vCenter), without leases and with the datastore leases (kept
and cold). Each operation is measured after a warm-up (login, datacenter and VM lookups are
once per process) and printed beside the minimum it needs and the table of every call and
why (CALLS); the last line is JSON for machines.

    .venv/bin/python -m bench.vsphere_roundtrips
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from esx_service.backends.vsphere import VsphereBackend
from esx_service.volumes import VolumeService
from esx_service.vsphere.session import VsphereSession

REPO = Path(__file__).resolve().parents[1]
VM = "DC0_H0_VM0"

# The fewest requests each operation can make once the datacenter, datastores and the
# caller's VM are known, given the design (metadata JSON beside the disk, its state written
# before and after the disk changes) and counting a metadata write as one request (a PUT):
# - create: does it exist (1 GET) + "creating" (1) + CreateVirtualDisk (1) + one read of
#   the finished task (1) + the disk's UUID (1) + "detached" (1)                        = 6
# - attach: metadata (1 GET) + devices of every VM on the datastore, the caller included
#   (1: also proves nobody else holds the disk) + ReconfigVM (1) + task (1) + devices after
#   (1: the bus/unit/PCI slot/UUID the host assigned) + "attached" (1)                 = 6
# - detach: metadata (1) + the VM's devices (1) + ReconfigVM (1) + task (1) + "detached" (1)
#                                                                                       = 5
# - list (one volume): search the metadata files (1 call + 1 task read) + 1 GET per volume
#                                                                                       = 3
# - remove: metadata (1) + "removing" (1) + DeleteVirtualDisk (1) + task (1) + delete the
#   metadata file (1)                                                                   = 5
MINIMUM = {"create": 6, "attach": 6, "detach": 5, "list": 3, "remove": 5}
# Before issue 15's vSphere work (RESULTS.md of 2026-11-30 16:43): without leases, and with
# the datastore leases (taken and released inside each operation, 6 + 2 round trips each).
BEFORE = {"create": 10, "attach": 9, "detach": 7, "list": 3, "remove": 8}
BEFORE_LEASED = {"create": 30, "attach": 19, "detach": 17, "list": 3, "remove": 20}

# Every request of each operation, as dockvols makes it: (method, how many, why it cannot
# go). "folder:GET"/"folder:PUT" are requests on the datastore's /folder HTTP interface, the
# rest SOAP methods. tests/integration/vsphere/test_vsphere_backend.py measures each
# operation on vcsim and requires exactly these methods and counts, so this table cannot
# drift from the code. A task's end is read with RetrievePropertiesEx (one read: vcsim, and
# short tasks on real hosts, are done by then; a longer task costs one more read per look).
GET = ("folder:GET", 1, "the metadata: state, options, holder (create: does it exist "
       "already; create is idempotent)")
WRITE = [("folder:PUT", 1, "a metadata write, to a temporary file beside the target (a PUT "
          "is not atomic: a crash could leave half a file)"),
         ("MoveDatastoreFile_Task", 1, "the rename over the target that makes the write "
          "atomic"),
         ("RetrievePropertiesEx", 1, "that rename's end: the state is recorded only once it "
          "is")]
# A write sent beside a reconfigure (Backend.attach_recorded, detach_recorded): its end is
# read with the reconfigure's, in one read. The record may land before the disk change: a
# crash between leaves a record that the next attach and recovery check against the VMs'
# devices; a reconfigure that fails after it landed has the record before written back.
SENT = "sent before the reconfigure's end is read"
SENT_WRITE = [WRITE[0], ("MoveDatastoreFile_Task", 1, f"the rename over the target that makes "
                         f"the write atomic, {SENT}")]
ONE_READ = "the reconfigure's end and the rename's in one read"
# A fenced write (with a lease): the temporary file is moved into the lease's staging
# folder and from there into place, both moves sent at once and their ends read together.
FENCED_WRITE = [("folder:PUT", 1, "the temporary file"),
                ("MoveDatastoreFile_Task", 2, "into the lease's staging folder (refused once "
                 "the lease is lost: fencing), then into place; sent back to back"),
                ("RetrievePropertiesEx", 1, "both moves' ends in one read")]
CALLS: dict[str, list[tuple[str, int, str]]] = {
    "create": [
        GET,
        *[(m, n, f"`creating`, before the disk, so a crash leaves something recovery "
           f"finds and cleans: {why}") for m, n, why in WRITE],
        ("CreateVirtualDisk_Task", 1, "the disk"),
        ("RetrievePropertiesEx", 1, "its end: the disk exists"),
        ("QueryVirtualDiskUuid", 1, "the UUID ESX gave the disk, recorded in the metadata "
         "(the guest finds the disk by it; attach reuses it where the host does not say)"),
        *[(m, n, f"`detached`, once the disk exists: {why}") for m, n, why in WRITE],
    ],
    "attach": [
        GET,
        ("RetrievePropertiesEx", 1, "the devices of every VM on the datastore and of the "
         "caller: attached here already, or to another VM (refused), and a free slot"),
        ("ReconfigVM_Task", 1, "the hot-add"),
        *[(m, n, f"`attached`, beside the hot-add (the slot chosen, its controller's PCI "
           f"slot, the UUID recorded at create: written again should the host say "
           f"otherwise): {why}") for m, n, why in SENT_WRITE],
        ("RetrievePropertiesEx", 1, f"{ONE_READ}, and the caller's devices after it: the "
         "bus/unit/PCI slot the host assigned, for the guest"),
    ],
    "detach": [
        GET,
        ("RetrievePropertiesEx", 1, "the VM's devices: the key of the disk to remove (a key "
         "recorded at attach could name another disk by now)"),
        ("ReconfigVM_Task", 1, "the hot-remove"),
        *[(m, n, f"`detached`, beside the hot-remove: {why}") for m, n, why in SENT_WRITE],
        ("RetrievePropertiesEx", 1, ONE_READ),
    ],
    "list": [
        ("SearchDatastoreSubFolders_Task", 1, "every metadata file of the datastore, one "
         "call"),
        ("RetrievePropertiesEx", 1, "its end, with the file list"),
        ("folder:GET", 1, "one per volume: its state (one volume here)"),
    ],
    "remove": [
        GET,
        *[(m, n, f"`removing` before the disk goes, so a crash never leaves visible "
           f"metadata without a disk: {why}") for m, n, why in WRITE],
        ("DeleteVirtualDisk_Task", 1, "the disk"),
        ("RetrievePropertiesEx", 1, "its end: only then may the metadata go"),
        ("DeleteDatastoreFile_Task", 1, "the metadata, last"),
        ("RetrievePropertiesEx", 1, "its end"),
    ],
}
# With the datastore leases (production: esx_service.leases through the vSphere file API),
# the lease already held: kept from the previous operation on the volume in this process
# (esx_service.cluster_locks), as Docker's Mount after Create, or Remove after Unmount.
TAKE = [("MakeDirectory", 1, "take the lease: this holder's entry (and the lease folder "
         "if missing) in one call"),
        ("SearchDatastore_Task", 1, "list the lease folder: alone means held"),
        ("RetrievePropertiesEx", 1, "that listing's end, with the entries")]
RELEASE_AFTER = ("DeleteDatastoreFile_Task + RetrievePropertiesEx", 2,
                 "release: after the answer, by the lease keeper, off the critical path")


def _fenced(rows: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """An operation's calls with its metadata writes fenced (and a fenced delete: a move
    into the staging folder, which the release deletes with it)."""
    out: list[tuple[str, int, str]] = []
    i = 0
    while i < len(rows):
        if rows[i][0] == "folder:PUT" and rows[i + 1][2].endswith(SENT):
            state = rows[i][2].split(":")[0]
            out += [(m, n, f"{state}: {why}") for m, n, why in FENCED_WRITE[:2]]
            out[-1] = (*out[-1][:2], f"{out[-1][2]}, {SENT}")
            i += 2
        elif rows[i][0] == "folder:PUT":
            state = rows[i][2].split(":")[0]
            out += [(m, n, f"{state}: {why}") for m, n, why in FENCED_WRITE]
            i += 3
        elif rows[i][0] == "DeleteDatastoreFile_Task":
            out += [("MoveDatastoreFile_Task", 1, "the metadata, last: moved into the "
                     "staging folder (fenced), deleted with it at release; its end is read "
                     "after the answer, before the lease's next write, reuse or release "
                     "(the record was `removing`: nobody lists it meanwhile)")]
            i += 2
        else:
            out.append(rows[i])
            i += 1
    return out


FENCED = {op: _fenced(rows) if op != "list" else rows for op, rows in CALLS.items()}
# Taken by the operation: 3 round trips more. create is the first operation on its name, so
# it always takes the lease (no total quota on the vmgroup, so no quota lease; a thin disk,
# so no space lease).
LEASED_COLD = {op: (TAKE + rows if op != "list" else rows) for op, rows in FENCED.items()}
# Under a lease, a create marks itself in the lease's staging folder instead of writing a
# fenced `creating` record, and a remove moves the record into that folder instead of
# writing `removing` and deleting it after the disk (esx_service.volumes: _make,
# _remove_parked). What a crash leaves there, the lease's next holder finishes
# (_finish_taken_over). Where a vmgroup has a total quota, the records stay (other hosts
# count them).
MARKED = {
    "create": [
        GET,
        ("MakeDirectory", 1, "the create's mark in the lease's staging folder (refused once "
         "the lease is lost): should this service die before the record is written, the "
         "lease's next holder deletes the disk"),
        *FENCED["create"][4:],  # the disk, its UUID and the `detached` record, as before
    ],
    "remove": [
        GET,
        ("MoveDatastoreFile_Task", 1, "the record into the lease's staging folder (refused "
         "once the lease is lost): out of sight at once, and the mark the lease's next "
         "holder finishes should this service die before the disk is gone"),
        ("RetrievePropertiesEx", 1, "its end: only then may the disk go"),
        ("DeleteVirtualDisk_Task", 1, "the disk (the record goes with the staging folder "
         "at release)"),
        ("RetrievePropertiesEx", 1, "its end"),
    ],
}
LEASED_COLD.update({op: TAKE + rows for op, rows in MARKED.items()})
# Kept from the previous operation on the volume: no take, and no GET of the metadata either
# (the lease's memo holds what this service last read or wrote, and nobody else writes
# while it holds the lease: esx_service.volumes._read).
LEASED_KEPT = {op: (rows if op in ("create", "list")
                    else [r for r in rows[len(TAKE):] if r is not GET])
               for op, rows in LEASED_COLD.items()}


def expected(table: dict[str, list[tuple[str, int, str]]]) -> dict[str, dict[str, int]]:
    """Per operation, round trips per method as the table says."""
    out: dict[str, dict[str, int]] = {}
    for op, rows in table.items():
        counts: Counter[str] = Counter()
        for method, n, _ in rows:
            counts[method] += n
        out[op] = dict(counts)
    return out


@contextmanager
def vcsim(extra_args: list[str] | None = None) -> Iterator[tuple[str, int, str, str]]:
    build = subprocess.run([str(REPO / "tests/vcsim/build.sh")], capture_output=True,
                           text=True)
    if build.returncode != 0:
        sys.exit(f"building vcsim failed:\n{build.stdout}{build.stderr}")
    tmpdir = tempfile.mkdtemp(prefix="dv-bench-vcsim-")
    proc = subprocess.Popen([str(REPO / "tests/vcsim/vcsim"), "-port", "0", *(extra_args or [])],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TMPDIR": tmpdir})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("VCSIM_URL="):
            sys.exit(f"vcsim did not start: {line!r}")
        url = urlsplit(line.strip().split("=", 1)[1])
        assert url.hostname and url.port and url.username and url.password
        yield url.hostname, url.port, url.username, url.password
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(tmpdir, ignore_errors=True)


def measure(backend: VsphereBackend, run: Callable[[], Any]) -> dict:
    """Round trips of ``run``, per method (SOAP wsdl names, ``folder:<HTTP method>``)."""
    methods: Counter[str] = Counter()
    counter = backend.round_trips
    original = counter.on_call

    def recording(method: str, seconds: float) -> None:
        methods[method] += 1
        if original is not None:
            original(method, seconds)

    soap0, http0 = counter.snapshot()
    counter.on_call = recording
    try:
        run()
    finally:
        counter.on_call = original
    soap1, http1 = counter.snapshot()
    return {"soap": soap1 - soap0, "http": http1 - http0,
            "total": soap1 - soap0 + http1 - http0, "methods": dict(methods)}


OPERATIONS = ("create", "attach", "detach", "list", "remove")


def run_operations(backend: VsphereBackend, vm: str, name: str, leases: str = "none"
                   ) -> dict[str, dict]:
    """create, attach, detach, list (this one volume in its vmgroup) and remove of ``name``
    through VolumeService, each measured after a warm-up cycle (login, datacenter, VM and
    folder lookups are once per process). ``leases``: "none" (in-process locks only),
    "kept" (production on the vSphere API: a lease outlives its operation for the next) or
    "cold" (each operation takes its lease: kept ones are let go before it)."""
    from dockvols_common.instance import Instance
    from esx_service.access import OpenAccess
    from esx_service.cluster_locks import ClusterLocks
    from esx_service.leases import LeaseManager

    class OneGroup(OpenAccess):  # list counts this volume only, whatever else is there
        def vmgroup_of(self, vm: str) -> str:
            return f"rt-{name}"

    manager = locks = None
    if leases != "none":
        manager = LeaseManager(backend.lease_store(), Instance("bench"))
        manager.start()
        locks = ClusterLocks(manager)
    service = VolumeService(backend, access=OneGroup(), locks=locks)
    try:
        service.create(vm, f"{name}-warm", {})
        service.attach(vm, f"{name}-warm")
        service.detach(vm, f"{name}-warm")
        service.remove(vm, f"{name}-warm")
        steps: dict[str, Callable[[], Any]] = {
            "create": lambda: service.create(vm, name, {"size": "1gb"}),
            "attach": lambda: service.attach(vm, name),
            "detach": lambda: service.detach(vm, name),
            "list": lambda: service.list(vm),
            "remove": lambda: service.remove(vm, name),
        }
        results = {}
        for op in OPERATIONS:
            if locks is not None and leases == "cold":
                locks.release_kept()
            results[op] = measure(backend, steps[op])
        return results
    finally:
        if locks is not None and manager is not None:
            locks.close()
            manager.stop()


def main() -> int:
    with vcsim() as (host, port, user, password):
        session = VsphereSession(host, port, user, password, insecure=True)
        with VsphereBackend(session, metadata_access="http") as backend:
            runs = {mode: run_operations(backend, VM, f"bench{mode}", leases=mode)
                    for mode in ("none", "kept", "cold")}
    _print(runs)
    return 0


def _methods(r: dict) -> str:
    return ", ".join(f"{m}x{n}" if n > 1 else m for m, n in sorted(r["methods"].items()))


def _print(runs: dict[str, dict[str, dict]]) -> None:
    none, kept, cold = runs["none"], runs["kept"], runs["cold"]
    tables = {"none": CALLS, "kept": LEASED_KEPT, "cold": LEASED_COLD}
    print(f"{'operation':<9} {'before':>6} {'now':>4} {'minimum':>7}   {'leases before':>13} "
          f"{'kept':>4} {'cold':>4}   table agrees")
    for op in OPERATIONS:
        agrees = all(runs[m][op]["methods"] == expected(tables[m])[op] for m in runs)
        print(f"{op:<9} {BEFORE[op]:>6} {none[op]['total']:>4} {MINIMUM[op]:>7}   "
              f"{BEFORE_LEASED[op]:>13} {kept[op]['total']:>4} {cold[op]['total']:>4}   "
              f"{'yes' if agrees else 'NO'}")
    print("\n'before' = before issue 15's vSphere work; 'kept' = with the datastore leases, "
          "the volume's lease kept from the previous operation in this process; 'cold' = "
          "the operation takes its lease (3 round trips); either way the release (2) comes "
          "after the answer. Every call and why (without leases):")
    for op, rows in CALLS.items():
        print(f"  {op}: {none[op]['total']} round trips ({_methods(none[op])})")
        for method, n, why in rows:
            print(f"    - {method}{f' x{n}' if n > 1 else ''}: {why}")
    print("\nWith the datastore leases (production), what changes:")
    for op in OPERATIONS:
        print(f"  {op}: kept {kept[op]['total']} ({_methods(kept[op])}); cold "
              f"{cold[op]['total']}")
    for op, rows in MARKED.items():
        print(f"  {op} (kept/cold): " + "; ".join(
            f"{m}{f' x{n}' if n > 1 else ''}: {why}" for m, n, why in rows))
    print("  a lease taken: " + "; ".join(f"{m}: {why}" for m, _, why in TAKE))
    print(f"  {RELEASE_AFTER[0]}: {RELEASE_AFTER[2]}")
    print("  a metadata write: " + "; ".join(f"{m}{f' x{n}' if n > 1 else ''}: {why}"
                                             for m, n, why in FENCED_WRITE))
    print(json.dumps({"bench": "vsphere_roundtrips", "vcsim": "VPX", "metadata": "http",
                      "results": {op: {"round_trips": none[op]["total"],
                                       "soap": none[op]["soap"], "http": none[op]["http"],
                                       "minimum": MINIMUM[op], "before": BEFORE[op],
                                       "with_leases": kept[op]["total"],
                                       "with_leases_cold": cold[op]["total"],
                                       "with_leases_before": BEFORE_LEASED[op],
                                       "table_agrees": all(
                                           runs[m][op]["methods"] == expected(tables[m])[op]
                                           for m in runs)}
                                  for op in OPERATIONS}}))


if __name__ == "__main__":
    sys.exit(main())
