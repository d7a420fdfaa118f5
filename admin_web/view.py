"""What the admin page shows, as pure functions of the admin API's answers: volumes grouped
per datastore, filtered and sorted; datastore and quota bars; operations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from dockvols_common.sizes import rounded_size_text, size_text

MB = 1024 * 1024
SORTS: dict[str, Callable[[dict], Any]] = {
    "volume": lambda v: v["volume"].lower(),
    "capacity": lambda v: v["capacity_mb"],
    "allocated": lambda v: v.get("allocated_mb", 0),
    "fstype": lambda v: v["fstype"],
    "vmgroup": lambda v: v["vmgroup"].lower(),
    "vm": lambda v: (v.get("attached_to") or "").lower(),
    "created": lambda v: v.get("created_at") or "",
}


@dataclass
class Filters:
    datastore: str = ""
    vmgroup: str = ""
    vm: str = ""  # the VM a volume is attached to, or the VM that created it
    sort: str = "volume"
    desc: bool = False

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> Filters:
        sort = args.get("sort", "volume")
        return cls(datastore=args.get("datastore", ""), vmgroup=args.get("vmgroup", ""),
                   vm=args.get("vm", ""), sort=sort if sort in SORTS else "volume",
                   desc=args.get("dir") == "desc")

    def keeps(self, volume: dict) -> bool:
        return ((not self.datastore or volume["datastore"] == self.datastore)
                and (not self.vmgroup or volume["vmgroup"] == self.vmgroup)
                and (not self.vm or self.vm in (volume.get("attached_to"),
                                                volume.get("created_by"))))

    @property
    def active(self) -> bool:
        return bool(self.datastore or self.vmgroup or self.vm)

    def query(self, **changes: str) -> str:
        """The query string of these filters with ``changes`` (for links)."""
        values = {"datastore": self.datastore, "vmgroup": self.vmgroup, "vm": self.vm,
                  "sort": self.sort, "dir": "desc" if self.desc else "asc", **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})


@dataclass
class DatastoreView:
    name: str
    type: str
    capacity_bytes: int
    free_bytes: int
    volumes: list[dict] = field(default_factory=list)
    total_volumes: int = 0

    @property
    def used_pct(self) -> float:
        if not self.capacity_bytes:
            return 0.0
        return round(100 * (self.capacity_bytes - self.free_bytes) / self.capacity_bytes, 1)

    @property
    def capacity(self) -> str:
        return rounded_size_text(self.capacity_bytes / MB)

    @property
    def free(self) -> str:
        return rounded_size_text(self.free_bytes / MB)

    @property
    def provisioned(self) -> str:
        return rounded_size_text(sum(v["capacity_mb"] for v in self.volumes))


def datastore_views(inventory: dict, volumes: list[dict], filters: Filters) -> list[DatastoreView]:
    """Each datastore (all of them, or the filtered one) with its volumes that pass."""
    views = {d["name"]: DatastoreView(d["name"], d["type"], d["capacity_bytes"],
                                      d["free_bytes"])
             for d in inventory.get("datastores", [])}
    for volume in volumes:
        view = views.setdefault(volume["datastore"], DatastoreView(volume["datastore"], "?", 0, 0))
        view.total_volumes += 1
        if filters.keeps(volume):
            view.volumes.append(volume)
    for view in views.values():
        view.volumes.sort(key=SORTS[filters.sort], reverse=filters.desc)
    return [views[name] for name in sorted(views, key=str.lower)
            if not filters.datastore or name == filters.datastore]


def quota_rows(vmgroups: list[dict], quotas: list[dict]) -> list[dict]:
    """One row per vmgroup: its VMs, volume count and use against each datastore rule."""
    by_group: dict[str, list[dict]] = {}
    for q in quotas:
        limit = q["limit_mb"]
        by_group.setdefault(q["vmgroup"], []).append({
            **q, "used": rounded_size_text(q["used_mb"]),
            "limit": size_text(limit) if limit else "unlimited",
            "pct": min(100.0, round(100 * q["used_mb"] / limit, 1)) if limit else None})
    return [{"name": g["name"], "vms": g.get("vms", []), "volumes": g.get("volumes", 0),
             "default_datastore": g.get("default_datastore") or "",
             "quotas": by_group.get(g["name"], [])} for g in vmgroups]


def choices(volumes: list[dict], inventory: dict, vmgroups: list[dict]) -> dict[str, list[str]]:
    """The values each filter can take."""
    vms = {v.get("attached_to") for v in volumes} | {v.get("created_by") for v in volumes}
    return {
        "datastore": sorted({d["name"] for d in inventory.get("datastores", [])}
                            | {v["datastore"] for v in volumes}, key=str.lower),
        "vmgroup": sorted({g["name"] for g in vmgroups} | {v["vmgroup"] for v in volumes},
                          key=str.lower),
        "vm": sorted((vm for vm in vms if vm), key=str.lower),
    }


def duration(ms: float | None) -> str:
    if ms is None:
        return "running"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def progress_pct(op: dict) -> float | None:
    p = op.get("progress")
    if not p or not p.get("total"):
        return None
    return round(100 * p["done"] / p["total"], 1)
