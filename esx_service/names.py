"""Volume names: ``name`` or ``name@datastore``, parsed and validated without any I/O.

The rules are vDVS's (whose users bring their volumes here): up to 100 characters of
anything a person can type, the last ``@`` separating the datastore. What is refused would
break a path (``/``, ``\\``, NUL), a line or a log (control characters, invisible
formatting), the wire (lone surrogates cannot be encoded) or a VMFS disk's companion files
(``-NNNNNN``, ``-flat``...). How a name becomes a file name is ``file_names``' job.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import InvalidName

MAX_NAME_LENGTH = 100
MAX_MOUNT_NAME_BYTES = 255
# VMFS names snapshot deltas <disk>-000001.vmdk: a volume called that would clash.
# Its extents and change-tracking files are <disk>-flat.vmdk, <disk>-ctk.vmdk and so on.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{6}|flat|delta|ctk|sesparse)$", re.IGNORECASE)
# Zero-width (non-)joiners are part of words in several scripts and of emoji sequences;
# every other formatting character (bidi overrides, zero-width space, BOM) only hides things.
_JOINERS = ("\u200c", "\u200d")
_REFUSED_CATEGORIES = {
    "Cc": "control character",
    "Cs": "lone surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Cf": "invisible formatting character",
}
RULES = (
    f"a volume name is 1-{MAX_NAME_LENGTH} characters: letters of any script, digits, spaces "
    "and symbols, but not '/', '\\', control or invisible formatting characters, not '.' or "
    "'..', not ending in -NNNNNN, -flat, -delta, -ctk or -sesparse; the last '@' starts an "
    "optional datastore name"
)


@dataclass(frozen=True)
class VolumeRef:
    """A volume as a caller named it; ``datastore`` is None when the default applies."""

    name: str
    datastore: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.datastore}" if self.datastore else self.name


def _shown(value: str) -> str:
    """repr() (which escapes what cannot be printed) without echoing absurd lengths."""
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."


def refused_character(value: str) -> str | None:
    """Why ``value`` cannot be part of a name (the first bad character), or None."""
    for ch in value:
        if ch in "/\\":
            return f"{ch!r} (a path separator)"
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES and ch not in _JOINERS:
            return f"U+{ord(ch):04X} (a {_REFUSED_CATEGORIES[category]})"
    return None


def _check_part(value: str, whole: str, what: str) -> None:
    if not value:
        raise InvalidName(f"invalid volume name {_shown(whole)}: the {what} is empty; {RULES}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"invalid volume name {_shown(whole)} ({len(value)} characters): the {what} is "
            f"longer than {MAX_NAME_LENGTH}; {RULES}"
        )
    bad = refused_character(value)
    if bad:
        raise InvalidName(f"invalid volume name {_shown(whole)}: the {what} holds {bad}; "
                          f"{RULES}")
    if value in (".", ".."):
        raise InvalidName(f"invalid volume name {_shown(whole)}: the {what} is {value!r}; "
                          f"{RULES}")


def parse_volume_name(full: object) -> VolumeRef:
    """Split ``name[@datastore]`` on the last ``@`` and validate both parts."""
    if not isinstance(full, str):
        raise InvalidName(f"invalid volume name {full!r}: not a string; {RULES}")
    if len(full) > 2 * MAX_NAME_LENGTH + 1:
        raise InvalidName(
            f"invalid volume name {_shown(full)} ({len(full)} characters): too long; {RULES}"
        )
    name, sep, datastore = full.rpartition("@")
    if not sep:
        name, datastore = full, ""
    _check_part(name, full, "volume name")
    suffix = _SNAPSHOT_SUFFIX.search(name)
    if suffix:
        raise InvalidName(f"invalid volume name {_shown(full)}: the suffix {suffix.group(0)!r} "
                          f"clashes with VMFS disk file names; {RULES}")
    if sep:
        _check_part(datastore, full, "datastore name")
    return VolumeRef(name, datastore or None)


def check_mountable(name: str, datastore: str) -> None:
    """The guest mounts a volume at ``<mount root>/<name>@<datastore>``: one file name, at
    most 255 bytes (100 characters of a non-Latin script can take 400)."""
    size = len(f"{name}@{datastore}".encode())
    if size > MAX_MOUNT_NAME_BYTES:
        raise InvalidName(
            f"invalid volume name {_shown(name)}: as {name[:20]!r}...@{datastore} it takes "
            f"{size} bytes in UTF-8, and the guest mounts a volume at "
            f"/mnt/vmdk/<name>@<datastore>, a file name of at most {MAX_MOUNT_NAME_BYTES} "
            "bytes; use a shorter name")


def check_datastore_name(name: str, what: str = "datastore name") -> str:
    """A datastore name that ``name@datastore`` can reach: no '@', no path or control
    characters (ESX's own names may hold spaces, brackets and any case)."""
    bad = refused_character(name) or ("'@' (it separates volume and datastore)"
                                      if "@" in name else None)
    if not name or bad or name in (".", ".."):
        raise InvalidName(f"invalid {what} {_shown(name)}: "
                          f"{'it holds ' + bad if bad else 'empty or a dot name'}; a datastore "
                          "name may hold spaces, brackets and letters of any case, but not "
                          "'@', '/', '\\' or control characters")
    return name


def match_datastore(asked: str, known: list[str]) -> str | None:
    """Datastore names match case-insensitively, as on ESX."""
    lowered = asked.casefold()
    for name in known:
        if name.casefold() == lowered:
            return name
    return None
