"""Plain-text tables for ``dockvols-admin``: pure functions from rows to text."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dockvols_common.sizes import rounded_size_text, size_text

Row = dict
Column = tuple[str, Callable[[Row], str]]  # (header, cell of a row)


def limit_mb(mb: int) -> str:
    return size_text(mb) if mb else "unlimited"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, under a dashed rule; no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def render(columns: Sequence[Column], rows: Sequence[Row]) -> str:
    return format_table([h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def _attached(v: Row) -> str:
    if v["status"] in ("detached", "attached"):
        return v.get("attached_to") or "detached"
    return f"({v['status']})"  # half-made or half-removed: shown to admins, never to VMs


# `volume ls -c` keys, in default order; headers as the admin guide names them.
VOLUME_COLUMNS: dict[str, Column] = {
    "volume": ("Volume", lambda v: v["volume"]),
    "datastore": ("Datastore", lambda v: v["datastore"]),
    "vmgroup": ("VMGroup", lambda v: v["vmgroup"]),
    "capacity": ("Capacity", lambda v: size_text(v["capacity_mb"])),
    "used": ("Used", lambda v: rounded_size_text(v["allocated_mb"])),
    "filesystem": ("Filesystem", lambda v: v["fstype"]),
    "policy": ("Policy", lambda v: v.get("vsan_policy_name") or "N/A"),
    "disk-format": ("Disk Format", lambda v: v["diskformat"]),
    "attached-to": ("Attached To", _attached),
    "access": ("Access", lambda v: v["access"]),
    "attach-as": ("Attach As", lambda v: v["attach_as"]),
    "created-by": ("Created By", lambda v: v["created_by"]),
    "created": ("Created", lambda v: v["created_at"]),
}

TOTAL_COLUMNS: list[Column] = [
    ("Datastore", lambda t: t["datastore"]),
    ("Volumes", lambda t: str(t["volumes"])),
    ("Capacity", lambda t: rounded_size_text(t["capacity_mb"])),
    ("Used", lambda t: rounded_size_text(t["used_mb"])),
    ("Free", lambda t: rounded_size_text(t["free_mb"])),
]

VMGROUP_COLUMNS: list[Column] = [
    ("Name", lambda g: g["name"]),
    ("Description", lambda g: g["description"]),
    ("Default Datastore", lambda g: g["default_datastore"] or "-"),
    ("VMs", lambda g: ",".join(g["vms"]) or "-"),
    ("Volumes", lambda g: str(g.get("volumes", "-"))),
    ("Created", lambda g: g["created_at"]),
]

ACCESS_COLUMNS: list[Column] = [
    ("Datastore", lambda a: a["datastore"]),
    ("Allow Create", lambda a: "yes" if a["allow_create"] else "no"),
    ("Max Volume Size", lambda a: limit_mb(a["volume_maxsize_mb"])),
    ("Total Size", lambda a: limit_mb(a["volume_totalsize_mb"])),
    ("Used", lambda a: rounded_size_text(a["used_mb"])),
]

POLICY_COLUMNS: list[Column] = [
    ("Name", lambda p: p["name"]),
    ("Content", lambda p: p["content"]),
    ("Volumes", lambda p: ",".join(p["volumes"]) or "-"),
    ("Created", lambda p: p["created_at"]),
]


def parse_columns(spec: str) -> list[Column]:
    """``-c volume,capacity,...`` to columns; ValueError names every valid key."""
    keys = [k.strip().lower().replace("_", "-") for k in spec.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VOLUME_COLUMNS]
    if unknown or not keys:
        what = ", ".join(unknown) if unknown else repr(spec)
        raise ValueError(f"unknown column {what}; valid columns: "
                         f"{','.join(VOLUME_COLUMNS)}")
    return [VOLUME_COLUMNS[k] for k in keys]
