"""What is on the datastores now, for the admin page and the scrape-time metrics: datastores
with capacity and free space, volumes per datastore and vmgroup, quota use per vmgroup,
disks attached per VM, and whether the backend answers.

Reading it costs a listing per datastore and, for allocated bytes, a look at every disk
(one datastore search per volume on vsphere), so the metrics collector keeps one snapshot
for ``ttl`` seconds however often it is scraped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends.base import Backend, DatastoreInfo, DiskLocation
from ..errors import DockvolsError
from ..metadata import ATTACHED, VolumeMeta
from ..metrics import Family
from ..options import MB
from ..volumes import VolumeService
from .db import AdminDb

log = logging.getLogger("dockvols.admin.inventory")
METRICS_TTL_S = 15.0


@dataclass
class Quota:
    vmgroup: str
    datastore: str
    allow_create: bool
    limit_mb: int  # 0: unlimited
    used_mb: int


@dataclass
class Snapshot:
    backend: str
    connected: bool
    error: str = ""
    datastores: list[DatastoreInfo] = field(default_factory=list)
    # (meta, allocated bytes) of every volume that exists (not being created or removed)
    volumes: list[tuple[VolumeMeta, int]] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)


def take_snapshot(volumes: VolumeService, backend: Backend, db: AdminDb,
                  allocation: bool = True) -> Snapshot:
    """``volumes`` lists datastores and metadata; ``backend`` (the one ``volumes`` runs on)
    names itself and, with ``allocation``, says how many bytes each disk takes."""
    try:
        datastores = volumes.datastores()
    except DockvolsError as exc:  # the backend (vCenter, ESXi) does not answer
        return Snapshot(backend.name, False, exc.message)
    snap = Snapshot(backend.name, True, datastores=datastores)
    use: dict[tuple[str, str], int] = {}  # (vmgroup, datastore) -> size_mb, every status
    for info in datastores:
        for meta in volumes.volumes_in(info.name, None):
            use[(meta.vmgroup, info.name)] = use.get((meta.vmgroup, info.name), 0) + \
                meta.reserved_mb
            if not meta.visible:
                continue
            allocated = backend.disk_allocated_bytes(
                DiskLocation(meta.datastore, meta.vmgroup, meta.name)) if allocation else 0
            snap.volumes.append((meta, allocated))
    for group in db.vmgroups():
        for info in datastores:
            rule = db.rule_for(group.name, info.name)
            if rule is not None:
                snap.quotas.append(Quota(group.name, info.name, rule.allow_create,
                                         rule.volume_totalsize_mb,
                                         use.get((group.name, info.name), 0)))
    return snap


def snapshot_view(snap: Snapshot) -> dict:
    """The wire form of the admin API's ``GET inventory`` (volumes are under ``volumes``)."""
    counts: dict[str, int] = {}
    for meta, _ in snap.volumes:
        counts[meta.datastore] = counts.get(meta.datastore, 0) + 1
    return {
        "backend": {"name": snap.backend, "connected": snap.connected, "error": snap.error},
        "datastores": [{**d.__dict__, "volumes": counts.get(d.name, 0)}
                       for d in snap.datastores],
        "quotas": [q.__dict__ for q in snap.quotas],
    }


def families(snap: Snapshot) -> list[Family]:
    """The scrape-time metric families of one snapshot."""
    volumes = Family("dockvols_volumes", "gauge", "Volumes per datastore and vmgroup")
    capacity = Family("dockvols_volume_capacity_bytes", "gauge",
                      "Capacity of the volumes per datastore and vmgroup, in bytes")
    allocated = Family("dockvols_volume_allocated_bytes", "gauge",
                       "Bytes the volumes' disks really take per datastore and vmgroup")
    per_group: dict[tuple[str, str], list[int]] = {}
    attached: dict[str, int] = {}
    for meta, used in snap.volumes:
        entry = per_group.setdefault((meta.datastore, meta.vmgroup), [0, 0, 0])
        entry[0] += 1
        entry[1] += meta.options.size_mb * MB
        entry[2] += used
        if meta.status == ATTACHED and meta.attached_to:
            attached[meta.attached_to] = attached.get(meta.attached_to, 0) + 1
    for (ds, group), (count, cap, used) in sorted(per_group.items()):
        volumes.add(count, datastore=ds, vmgroup=group)
        capacity.add(cap, datastore=ds, vmgroup=group)
        allocated.add(used, datastore=ds, vmgroup=group)
    ds_capacity = Family("dockvols_datastore_capacity_bytes", "gauge",
                         "Capacity of each datastore, in bytes")
    ds_free = Family("dockvols_datastore_free_bytes", "gauge",
                     "Free space of each datastore, in bytes")
    for info in snap.datastores:
        ds_capacity.add(info.capacity_bytes, datastore=info.name, type=info.type)
        ds_free.add(info.free_bytes, datastore=info.name, type=info.type)
    limit = Family("dockvols_vmgroup_quota_limit_bytes", "gauge",
                   "volume-totalsize of each vmgroup per datastore (absent: unlimited)")
    quota_use = Family("dockvols_vmgroup_quota_used_bytes", "gauge",
                       "Capacity of the vmgroup's volumes per datastore, as its quota counts it")
    for q in snap.quotas:
        if q.limit_mb:
            limit.add(q.limit_mb * MB, vmgroup=q.vmgroup, datastore=q.datastore)
        quota_use.add(q.used_mb * MB, vmgroup=q.vmgroup, datastore=q.datastore)
    disks = Family("dockvols_vm_attached_disks", "gauge", "dockvols disks attached per VM")
    for vm, n in sorted(attached.items()):
        disks.add(n, vm=vm)
    connected = Family("dockvols_backend_connected", "gauge",
                       "1 when the backend (vSphere, or the local datastores) answers")
    connected.add(1 if snap.connected else 0, backend=snap.backend)
    return [volumes, capacity, allocated, ds_capacity, ds_free, limit, quota_use, disks,
            connected]


class InventoryCollector:
    """A metrics collector: families of a snapshot at most ``ttl`` seconds old."""

    def __init__(self, take: Callable[[], Snapshot], ttl: float = METRICS_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._take = take
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Family]] | None = None

    def __call__(self) -> list[Family]:
        with self._lock:  # one scrape computes, a concurrent one waits for its result
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._ttl:
                try:
                    self._cached = (now, families(self._take()))
                except Exception:  # a scrape must still answer: log, serve what we had
                    log.exception("reading the inventory for metrics failed")
                    if self._cached is None:
                        return []
            return self._cached[1]
