"""vSphere API round trips per volume operation, against vcsim, through the real volume layer.

Builds tests/vcsim (offline), starts it on 127.0.0.1, and runs create, attach, detach, list
and remove through VolumeService on the vsphere backend (metadata over the /folder HTTP
interface, as from a remote vCenter). Each operation is measured after a warm-up (login,
datacenter and VM lookups are once per process) and printed beside the minimum it needs,
with the SOAP methods called; the last line is JSON for machines.

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
from esx_service.vsphere.session import CountingStub, VsphereSession

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
# What the backend adds on top, by design: each metadata write is PUT to a temporary file
# + MoveDatastoreFile (call + task read) so a crash never leaves half a file (+2 per write);
# create makes the folder first (+1) and reports the disk's real allocation (+2, a datastore
# search); deleting metadata through the FileManager is a task (+1); on vcsim only, attach
# asks the disk for its UUID because vcsim leaves backing.uuid unset (+1).
MINIMUM = {"create": 6, "attach": 6, "detach": 5, "list": 3, "remove": 5}
# The minimum with crash-safe metadata (each write = PUT of a temporary file + its rename,
# MoveDatastoreFile_Task, + one read of that task: +2 per write), deleting the metadata file
# through the FileManager (a task: +1), and, on vcsim only, the disk UUID asked of the disk
# because vcsim leaves backing.uuid unset (+1 on attach).
DESIGN_MINIMUM = {"create": 10, "attach": 9, "detach": 7, "list": 3, "remove": 8}
# Every request of each operation as dockvols makes it, and why it cannot go (issue 15).
CALLS = {
    "create": [
        ("GET metadata (http)", "does the volume exist already (create is idempotent)"),
        ("PUT .name.json.tmp (http)", "`creating`: written before the disk, so a crash "
         "leaves something recovery finds and cleans"),
        ("MoveDatastoreFile_Task + task read", "the rename that makes the write atomic"),
        ("CreateVirtualDisk_Task + task read", "the disk; the read says it succeeded"),
        ("QueryVirtualDiskUuid", "the UUID ESX gave the disk (recorded in the metadata)"),
        ("PUT tmp + MoveDatastoreFile_Task + task read", "`detached`: the volume becomes "
         "visible only once the disk exists"),
    ],
    "attach": [
        ("GET metadata (http)", "state, options, who holds it"),
        ("RetrievePropertiesEx: devices of every VM on the datastore + the caller",
         "is it attached here already, or to another VM (refuse), and a free slot"),
        ("ReconfigVM_Task + task read", "the attach"),
        ("RetrievePropertiesEx: the caller's devices after", "the bus/unit/PCI slot the "
         "host assigned, for the guest to find the disk"),
        ("QueryVirtualDiskUuid (vcsim only)", "vcsim leaves backing.uuid unset"),
        ("PUT tmp + MoveDatastoreFile_Task + task read", "`attached`, after the disk is"),
    ],
    "detach": [
        ("GET metadata (http)", "attached to this VM?"),
        ("RetrievePropertiesEx: the VM's devices", "the device key of the disk to remove"),
        ("ReconfigVM_Task + task read", "the detach"),
        ("PUT tmp + MoveDatastoreFile_Task + task read", "`detached`, after the disk is"),
    ],
    "list": [
        ("SearchDatastoreSubFolders_Task + task read", "every metadata file, one call"),
        ("GET metadata (http), one per volume", "the state of each"),
    ],
    "remove": [
        ("GET metadata (http)", "exists, detached?"),
        ("PUT tmp + MoveDatastoreFile_Task + task read", "`removing` before the disk goes, "
         "so a crash never leaves visible metadata without a disk"),
        ("DeleteVirtualDisk_Task + task read", "the disk"),
        ("DeleteDatastoreFile_Task + task read", "the metadata, last"),
    ],
}


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
    methods: Counter[str] = Counter()
    original = CountingStub.InvokeMethod

    def recording(self: CountingStub, mo: Any, info: Any, args: Any,
                  outerStub: Any = None) -> Any:
        methods[info.wsdlName] += 1
        return original(self, mo, info, args, outerStub)

    soap0, http0 = backend.round_trips.snapshot()
    CountingStub.InvokeMethod = recording  # type: ignore[method-assign]
    try:
        run()
    finally:
        CountingStub.InvokeMethod = original  # type: ignore[method-assign]
    soap1, http1 = backend.round_trips.snapshot()
    return {"soap": soap1 - soap0, "http": http1 - http0,
            "total": soap1 - soap0 + http1 - http0, "methods": dict(methods)}


def main() -> int:
    results = _run(leases=False)
    leased = _run(leases=True)
    _print(results, leased)
    return 0


def _run(leases: bool) -> dict:
    """Each operation once; ``leases``: with the datastore leases esx_service takes in
    production (esx_service/main.py), else with in-process locks only."""
    from dockvols_common.instance import Instance
    from esx_service.cluster_locks import ClusterLocks
    from esx_service.leases import LeaseManager

    with vcsim() as (host, port, user, password):
        session = VsphereSession(host, port, user, password, insecure=True)
        with VsphereBackend(session, metadata_access="http") as backend:
            manager = None
            if leases:
                manager = LeaseManager(backend.lease_store(), Instance("bench"))
                manager.start()
            service = VolumeService(backend, locks=ClusterLocks(manager) if manager else None)
            service.create(VM, "warmup", {})     # login, datacenter, VM, policy-free paths
            service.attach(VM, "warmup")
            service.detach(VM, "warmup")
            service.remove(VM, "warmup")
            results = {
                "create": measure(backend, lambda: service.create(VM, "bench", {"size": "1gb"})),
                "attach": measure(backend, lambda: service.attach(VM, "bench")),
                "detach": measure(backend, lambda: service.detach(VM, "bench")),
                "list": measure(backend, lambda: service.list(VM)),
                "remove": measure(backend, lambda: service.remove(VM, "bench")),
            }
            if manager is not None:
                manager.stop()
    return results


def _print(results: dict, leased: dict) -> None:
    print(f"{'operation':<9} {'trips':>5} {'soap':>5} {'http':>5} {'minimum':>7} {'ratio':>6}"
          f" {'design':>6}  soap methods")
    for op, r in results.items():
        calls = ", ".join(f"{m}x{n}" if n > 1 else m for m, n in sorted(r["methods"].items()))
        print(f"{op:<9} {r['total']:>5} {r['soap']:>5} {r['http']:>5} {MINIMUM[op]:>7} "
              f"{r['total'] / MINIMUM[op]:>6.2f} {DESIGN_MINIMUM[op]:>6}  {calls}")
    print("\n'design' = the minimum with crash-safe metadata writes (PUT temp + rename task "
          "+ its read: +2 per write), the metadata delete as a task (+1) and vcsim's unset "
          "backing.uuid (+1 on attach). Every call and why:")
    for op, calls_of in CALLS.items():
        print(f"  {op}:")
        for call, why in calls_of:
            print(f"    - {call}: {why}")
    print("\nWith the datastore leases esx_service takes in production (multi-host "
          "exclusion, esx_service/leases.py):")
    for op, r in leased.items():
        calls = ", ".join(f"{m}x{n}" if n > 1 else m for m, n in sorted(r["methods"].items()))
        extra = r["total"] - results[op]["total"]
        print(f"{op:<9} {r['total']:>5} {r['soap']:>5} {r['http']:>5}  +{extra} for the "
              f"lease  {calls}")
    print(json.dumps({"bench": "vsphere_roundtrips", "vcsim": "VPX", "metadata": "http",
                      "results": {op: {"round_trips": r["total"], "soap": r["soap"],
                                       "http": r["http"], "minimum": MINIMUM[op],
                                       "design_minimum": DESIGN_MINIMUM[op],
                                       "with_leases": leased[op]["total"]}
                                  for op, r in results.items()}}))


if __name__ == "__main__":
    sys.exit(main())
