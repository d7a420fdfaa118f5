"""The kernel's mount table (/proc/self/mountinfo), read one way for the plugin, the bench
and the tests.

mountinfo rather than psutil.disk_partitions(): psutil reads /proc/self/mounts (or /etc/mtab
where that file exists, which in a container rootfs need not be this namespace's table) and
gives no mount or parent IDs, which telling stacked mounts from propagated copies needs.
Standard library only: esx_service imports this package too (ESXi's Python)."""

from __future__ import annotations

from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"


class Mount(NamedTuple):
    mount_id: str
    parent_id: str
    point: str  # unescaped
    source: str  # unescaped; the filesystem's own name ("proc") when it has no device
    fstype: str


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as three octal digits."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo table, in the kernel's order (malformed ones are
    skipped: a reader must not fail on a line it does not need)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        after = right.split()
        source = after[1] if len(after) > 1 else ""
        mounts.append(Mount(fields[0], fields[1], unescape(fields[4]), unescape(source),
                            after[0] if after else ""))
    return mounts


def read_mountinfo(path: str = MOUNTINFO) -> list[Mount]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mounts_under(root: str, path: str = MOUNTINFO) -> list[Mount]:
    """The mounts strictly below ``root``, in the kernel's order."""
    prefix = root.rstrip("/") + "/"
    return [m for m in read_mountinfo(path) if m.point.startswith(prefix)]
