"""`dockvols-admin volume ls` at 10, 100, 1,000 and 5,000 volumes on the local backend.

Volumes are seeded by writing metadata, descriptor and sparse extent files directly (what a
create leaves, without its fsyncs). Each size is timed through the whole admin path: the
CLI's client, the admin unix socket, AdminApi reading every metadata file and the disk's
allocation, and the table; best and median of RUNS. Target: 5,000 volumes under 1 s.

    .venv/bin/python -m bench.admin_volume_ls
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from esx_service.admin import cli
from esx_service.admin.admin_api import AdminApi
from esx_service.admin.db import AdminDb
from esx_service.admin.db_access import DbAccess
from esx_service.admin.importer import Importer
from esx_service.admin.service import AdminService
from esx_service.backends.base import DiskLocation
from esx_service.backends.local import LocalBackend
from esx_service.metadata import DETACHED, VolumeMeta
from esx_service.options import MB, VolumeOptions
from esx_service.server import UnixApiServer
from esx_service.vmdk import build_descriptor, new_disk_uuid
from esx_service.volumes import VolumeService

SIZES = (10, 100, 1000, 5000)
RUNS = int(os.environ.get("DOCKVOLS_BENCH_RUNS", "5"))
TARGET_S = 1.0
VMGROUPS = ("_DEFAULT", "team-a", "team-b", "team-c")


def seed(root: str, count: int) -> None:
    """``count`` volumes spread over vmgroups, as a create leaves them on disk."""
    for i in range(count):
        loc = DiskLocation("ds1", VMGROUPS[i % len(VMGROUPS)], f"vol{i:05d}")
        folder = os.path.join(root, loc.folder)
        os.makedirs(folder, exist_ok=True)
        extent = f"{loc.name}-flat.vmdk"
        with open(os.path.join(folder, extent), "wb") as f:
            f.truncate(100 * MB)
        with open(os.path.join(root, loc.descriptor_path), "w") as f:
            f.write(build_descriptor(extent, 100 * MB, True, new_disk_uuid()))
        meta = VolumeMeta(name=loc.name, datastore="ds1", vmgroup=loc.vmgroup,
                          options=VolumeOptions(size_mb=100), created_by="bench-vm",
                          status=DETACHED)
        with open(os.path.join(root, loc.metadata_path), "w") as f:
            json.dump(meta.to_dict(), f)


def time_cli(argv: list[str]) -> list[float]:
    times = []
    for _ in range(RUNS):
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = cli.main(argv)
        times.append(time.perf_counter() - start)
        assert code == 0, out.getvalue()
    return times


def measure(count: int) -> dict:
    work = tempfile.mkdtemp(prefix="dvbench-", dir="/tmp")
    try:
        seed(os.path.join(work, "ds1"), count)
        db = AdminDb(os.path.join(work, "dockvols.db"))
        backend = LocalBackend({"ds1": os.path.join(work, "ds1")})
        service = VolumeService(backend, "ds1", DbAccess(db))
        sock = os.path.join(work, "admin.sock")
        admin = AdminApi(AdminService(service, db), Importer(service, backend, db))
        server = UnixApiServer(sock, admin, "admin", mode=0o600)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        try:
            listed = json.loads(_capture(["volume", "ls", "--json", "--socket", sock]))
            assert len(listed["volumes"]) == count, len(listed["volumes"])
            table = time_cli(["volume", "ls", "--socket", sock])
            as_json = time_cli(["volume", "ls", "--json", "--socket", sock])
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "esx_service.admin.cli", "volume", "ls",
                            "--socket", sock], check=True, capture_output=True)
            process = time.perf_counter() - start
        finally:
            server.shutdown()
            server.server_close()
            db.close()
        return {"volumes": count, "table": table, "json": as_json, "process": process}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _capture(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


def main() -> int:
    print(f"dockvols-admin volume ls, local backend, best / median of {RUNS} runs "
          f"(target: 5,000 volumes under {TARGET_S:.0f} s)\n")
    print(f"{'volumes':>8}  {'table best':>10}  {'median':>8}  {'per volume':>10}  "
          f"{'--json best':>11}  {'new process':>11}")
    worst = 0.0
    for count in SIZES:
        r = measure(count)
        best, median = min(r["table"]), statistics.median(r["table"])
        if count == max(SIZES):
            worst = median
        print(f"{count:>8}  {best * 1000:>8.1f}ms  {median * 1000:>6.1f}ms  "
              f"{best / count * 1e6:>8.0f}us  {min(r['json']) * 1000:>9.1f}ms  "
              f"{r['process'] * 1000:>9.1f}ms")
    verdict = "meets" if worst < TARGET_S else "MISSES"
    print(f"\n{max(SIZES)} volumes: median {worst:.2f}s, {verdict} the {TARGET_S:.0f}s target")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
