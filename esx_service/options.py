"""Volume create options (``docker volume create -o key=value``), parsed without I/O."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from dockvols_common.sizes import UNITS_MB as _UNITS_MB

from .errors import InvalidOption

MB = 1024 * 1024
# vDVS's mb/gb/tb, and Docker's own spellings of the same binary units (`-m 512m`,
# `--shm-size 1g`) and their IEC names: 10g, 10G, 10gb and 10GiB are all 10,240 MB.
_SIZE = re.compile(r"(\d+)\s*([mgt])(?:i?b)?", re.IGNORECASE)
MAX_SIZE_MB = 62 * 1024 * 1024  # the VMDK format's limit, 62 TB
# mkfs.xfs from xfsprogs 5.19 on refuses filesystems under 300 MB.
MIN_SIZE_MB = {"ext4": 8, "xfs": 300}

DISK_FORMATS = ("thin", "zeroedthick", "eagerzeroedthick")
FSTYPES = ("ext4", "xfs")
ACCESS_MODES = ("read-write", "read-only")
ATTACH_AS = ("persistent", "independent_persistent")

# option -> (default shown in errors, allowed values or a description)
VALID_OPTIONS: dict[str, tuple[str, str]] = {
    "size": ("100mb", "X[mb|gb|tb], X a positive integer"),
    "diskformat": ("thin", "|".join(DISK_FORMATS)),
    "fstype": ("ext4", "|".join(FSTYPES)),
    "access": ("read-write", "|".join(ACCESS_MODES)),
    "attach-as": ("persistent", "|".join(ATTACH_AS)),
    "clone-from": ("none", "name of an existing detached volume"),
    "vsan-policy-name": ("none", "name of a VSAN storage policy (vsphere backend)"),
}


def describe_valid_options() -> str:
    return "; ".join(f"{k}={allowed} (default {d})" for k, (d, allowed) in VALID_OPTIONS.items())


@dataclass(frozen=True)
class VolumeOptions:
    size_mb: int = 100
    diskformat: str = "thin"
    fstype: str = "ext4"
    access: str = "read-write"
    attach_as: str = "persistent"
    clone_from: str | None = None
    vsan_policy_name: str | None = None

    def to_dict(self) -> dict:
        # Every field is a plain value: no need for dataclasses.asdict's recursive deep copy.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> VolumeOptions:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _shown(value: str, limit: int = 40) -> str:
    """A value as an error message names it: whole when short, else its start and length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _with_guess(key: object) -> str:
    """An unknown option's name, with the valid one it most likely misspells (`sizee`,
    `disk-format`, `attach_as`): the list of valid options that follows is long."""
    text = _shown(str(key))
    folded = str(key).lower().replace("_", "-")  # an exact match after folding scores 1.0
    close = difflib.get_close_matches(folded, list(VALID_OPTIONS), n=1, cutoff=0.75)
    return f"{text} (did you mean {close[0]!r}?)" if close else text


def parse_size_mb(value: str) -> int:
    match = _SIZE.fullmatch(value.strip())
    # Thousands of digits: int() refuses past 4,300 of them, and no disk needs 20.
    digits = match.group(1).lstrip("0") if match else ""
    if match is None or not digits:
        raise InvalidOption(
            f"invalid size {_shown(value)}: use X[mb|gb|tb] with X a positive integer, "
            "e.g. 200mb or 10gb (10g and 10GiB mean 10gb too)")
    unit = _UNITS_MB[match.group(2).lower() + "b"]
    if len(digits) > 20 or int(digits) * unit > MAX_SIZE_MB:
        raise InvalidOption(f"invalid size {_shown(value)}: the largest disk is 62tb")
    return int(digits) * unit


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidOption(
            f"invalid value {value!r} for option {key!r}: allowed are {', '.join(allowed)}"
        )
    return value


def parse_options(raw: object) -> VolumeOptions:
    """Validate docker's ``Opts`` map; ``None`` means no options."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidOption(f"options must be a map of strings, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in VALID_OPTIONS)
    if unknown:
        raise InvalidOption(
            f"unknown option {', '.join(map(_with_guess, unknown))}; valid options are: "
            f"{describe_valid_options()}"
        )
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidOption(f"option {key!r} must be a string, got {value!r}")
    fields: dict = {}
    if "size" in raw:
        fields["size_mb"] = parse_size_mb(raw["size"])
    if "diskformat" in raw:
        fields["diskformat"] = _choice("diskformat", raw["diskformat"], DISK_FORMATS)
    if "fstype" in raw:
        fields["fstype"] = _choice("fstype", raw["fstype"], FSTYPES)
    if "access" in raw:
        fields["access"] = _choice("access", raw["access"], ACCESS_MODES)
    if "attach-as" in raw:
        fields["attach_as"] = _choice("attach-as", raw["attach-as"], ATTACH_AS)
    if raw.get("clone-from"):
        fields["clone_from"] = raw["clone-from"]
    if raw.get("vsan-policy-name"):
        fields["vsan_policy_name"] = raw["vsan-policy-name"]
    options = VolumeOptions(**fields)
    minimum = MIN_SIZE_MB[options.fstype]
    if options.size_mb < minimum and not options.clone_from:
        raise InvalidOption(
            f"invalid size {raw.get('size', '100mb')!r} for fstype {options.fstype}: "
            f"the smallest {options.fstype} volume is {minimum}mb"
        )
    return options
