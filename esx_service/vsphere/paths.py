"""Datastore paths: ``[datastore] folder/file``, in the forms hosts and vcsim write them."""

from __future__ import annotations

import re

# Real ESX writes "[ds] dockvols/x", vcsim's datastore browser "[ds]/dockvols/x"; a space
# or a slash (or both, or neither) may follow the bracket.
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*/?(?P<path>.*)$")


def ds_path(datastore: str, relative: str) -> str:
    """The canonical form vSphere APIs take: ``[ds] relative/path``."""
    return f"[{datastore}] {relative.lstrip('/')}"


def split_ds_path(path: str) -> tuple[str, str]:
    """``("ds", "relative/path")`` from any accepted form; ValueError if not a ds path."""
    match = _DS_PATH.match(path.strip())
    if not match:
        raise ValueError(f"not a datastore path: {path!r}")
    return match.group("ds"), match.group("path").strip().lstrip("/")


def same_ds_path(a: str, b: str) -> bool:
    """Whether two datastore paths name the same file. Datastore names compare without
    case (as volume names' ``@datastore`` do); paths within a datastore exactly."""
    try:
        (ds_a, rel_a), (ds_b, rel_b) = split_ds_path(a), split_ds_path(b)
    except ValueError:
        return False
    return ds_a.lower() == ds_b.lower() and rel_a == rel_b
