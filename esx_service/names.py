"""Volume names: ``name`` or ``name@datastore``, parsed and validated without any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName

MAX_NAME_LENGTH = 100
_ALLOWED_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Datastore names on ESX may hold spaces and brackets ("datastore1 (1)"); they are matched
# against the known list anyway, so only path and control characters are refused here.
_ALLOWED_DATASTORE = re.compile(r"[^/\\\x00-\x1f\x7f]+")
# VMFS names snapshot deltas <disk>-000001.vmdk: a volume called that would clash.
# Its extents and change-tracking files are <disk>-flat.vmdk, <disk>-ctk.vmdk and so on.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{6}|flat|delta|ctk|sesparse)$", re.IGNORECASE)
_RULES = (
    f"a volume name is 1-{MAX_NAME_LENGTH} characters of letters, digits, '_', '.' and '-', "
    "starting with a letter or digit, not ending in -NNNNNN, -flat, -delta, -ctk or "
    "-sesparse, optionally followed by @datastore"
)


@dataclass(frozen=True)
class VolumeRef:
    """A volume as a caller named it; ``datastore`` is None when the default applies."""

    name: str
    datastore: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.datastore}" if self.datastore else self.name


def _check_part(value: str, whole: str, what: str, allowed: re.Pattern[str]) -> None:
    if not value:
        raise InvalidName(f"invalid volume name {whole!r}: the {what} is empty; {_RULES}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"invalid volume name {whole[:40]!r}... ({len(value)} characters): the {what} is "
            f"longer than {MAX_NAME_LENGTH}; {_RULES}"
        )
    if not allowed.fullmatch(value) or value in (".", ".."):
        raise InvalidName(f"invalid volume name {whole!r}: bad {what} {value!r}; {_RULES}")


def parse_volume_name(full: object) -> VolumeRef:
    """Split ``name[@datastore]`` and validate both parts."""
    if not isinstance(full, str):
        raise InvalidName(f"invalid volume name {full!r}: not a string; {_RULES}")
    if len(full) > 2 * MAX_NAME_LENGTH + 1:
        raise InvalidName(
            f"invalid volume name {full[:40]!r}... ({len(full)} characters): too long; {_RULES}"
        )
    name, sep, datastore = full.rpartition("@")
    if not sep:
        name, datastore = full, ""
    _check_part(name, full, "volume name", _ALLOWED_VOLUME)
    if _SNAPSHOT_SUFFIX.search(name):
        raise InvalidName(
            f"invalid volume name {full!r}: the suffix clashes with VMFS disk file names; "
            f"{_RULES}"
        )
    if sep:
        _check_part(datastore, full, "datastore name", _ALLOWED_DATASTORE)
    return VolumeRef(name, datastore or None)


def match_datastore(asked: str, known: list[str]) -> str | None:
    """Datastore names match case-insensitively, as on ESX."""
    lowered = asked.lower()
    for name in known:
        if name.lower() == lowered:
            return name
    return None
