"""Per-volume metadata kept beside the disk as ``<name>.json``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .options import VolumeOptions

# Life cycle: creating -> detached <-> attached; detached -> removing -> (gone).
CREATING, DETACHED, ATTACHED, REMOVING = "creating", "detached", "attached", "removing"
STATES = (CREATING, DETACHED, ATTACHED, REMOVING)


def json_copy(data: object) -> object:
    """A copy of JSON-shaped data (dicts, lists, scalars) as reading it back would give it
    (tuples become lists): a tenth of copy.deepcopy's cost on a metadata record, which is
    copied on every read and write of a held volume's record (issue 15)."""
    if isinstance(data, dict):
        return {key: json_copy(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_copy(value) for value in data]
    return data


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class VolumeMeta:
    name: str
    datastore: str
    vmgroup: str
    options: VolumeOptions
    created_by: str
    created_at: str = field(default_factory=utc_now)
    status: str = CREATING
    attached_to: str | None = None
    attach_info: dict | None = None
    disk_uuid: str = ""
    docker_name: str = ""
    # Set once the guest has made a filesystem: until then even a read-only volume is
    # attached writable, so its first mount can format it.
    formatted: bool = False
    # Made by a create (not a clone, not adopted) and never attached since: the disk reads
    # as zeros, so its first attach tells the guest to format without looking first.
    blank: bool = False
    generation: int = 0
    # A grow in progress: the size (mb) recorded before the disk grows, so a crash between
    # the two is finished by recovery, and quotas count it from the moment it is recorded.
    resize_to: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.name}@{self.datastore}"

    @property
    def visible(self) -> bool:
        """Half-made or half-removed volumes are never shown to callers."""
        return self.status in (DETACHED, ATTACHED)

    @property
    def reserved_mb(self) -> int:
        """What the volume counts against quotas: its size, or a recorded grow's target."""
        return max(self.options.size_mb, self.resize_to or 0)

    def evolve(self, **changes: object) -> VolumeMeta:
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        # Field by field rather than dataclasses.asdict, which recurses into and deep-copies
        # every value: it was half of esx_service's time in List (bench/profile_slowest.py).
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["options"] = self.options.to_dict()
        if self.attach_info is not None:
            data["attach_info"] = json_copy(self.attach_info)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VolumeMeta:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["options"] = VolumeOptions.from_dict(data.get("options") or {})
        if fields.get("status") not in STATES:
            raise ValueError(f"unknown volume status {fields.get('status')!r}")
        resize_to = fields.get("resize_to")
        if resize_to is not None and (not isinstance(resize_to, int) or resize_to <= 0):
            raise ValueError(f"invalid resize_to {resize_to!r}: a size in mb")
        return cls(**fields)
