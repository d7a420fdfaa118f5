"""Disk sizes as users type them (`-o size=10gb`), shown the same way on both sides."""

from __future__ import annotations

UNITS_MB = {"mb": 1, "gb": 1024, "tb": 1024 * 1024}


UNKNOWN = "?"  # a size an answer did not carry


def size_text(size_mb: float | None) -> str:
    """A size in the largest unit that holds it whole (10240 -> 10gb, 1536 -> 1536mb): what
    was asked for reads back as it was typed, and the text is a valid `size` option again.
    A size that is no whole number of megabytes (a usage figure) keeps one decimal."""
    if size_mb is None:
        return UNKNOWN
    if size_mb != int(size_mb):
        return f"{size_mb:.1f}mb"
    whole = int(size_mb)
    for unit in ("tb", "gb"):
        if whole and whole % UNITS_MB[unit] == 0:
            return f"{whole // UNITS_MB[unit]}{unit}"
    return f"{whole}mb"


def rounded_size_text(size_mb: float | None) -> str:
    """A size to read at a glance in a table (1.5gb, 200mb, 12.3mb): one decimal at most."""
    if size_mb is None:
        return UNKNOWN
    for unit in ("tb", "gb"):
        if size_mb >= UNITS_MB[unit]:
            return f"{size_mb / UNITS_MB[unit]:.1f}".rstrip("0").rstrip(".") + unit
    return f"{size_mb:.1f}".rstrip("0").rstrip(".") + "mb"
