"""Who this process is, in names other hosts can read: the tag on lease entries and temp files.

A tag is ``<host>_<locality>_<pid>_<start>_<random>``. ``host`` is the operator's host id
(``[service] host_id``, default the host name) and only informs; ``locality`` is a digest of
the kernel's boot id and this process's PID namespace (random where /proc belongs to another
PID namespace). Two processes with the same locality see the same PIDs, so there (and only
there) a PID that no longer runs, or that now belongs to a process started at another time,
proves the tagged writer dead. A tag from anywhere else
(another host, another PID namespace, a faked host id on another machine) proves nothing and
is left to the lease bound.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _proc_is_ours() -> bool:
    """Whether /proc numbers processes as this process's PID namespace does. A service
    started in a PID namespace of its own without a /proc of its own (``unshare --pid``
    without ``--mount-proc``) would otherwise read another process's start time for every
    PID it looks up, its own included."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot, None when no such process.
    (Field 22 of /proc/PID/stat; the command name before it may hold spaces or parens.)"""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    fields = raw.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def safe_host_id(value: str) -> str:
    """A host id usable in file names on every datastore: letters, digits, ``.``, ``-``;
    at most 16 characters, so a temp name of the longest file stem still fits in 255."""
    return _UNSAFE.sub("-", value).strip("-")[:16].strip("-") or "host"


@dataclass(frozen=True)
class Tag:
    host: str
    locality: str
    pid: int
    start: str
    nonce: str

    def __str__(self) -> str:
        return f"{self.host}_{self.locality}_{self.pid}_{self.start}_{self.nonce}"


def parse_tag(text: str) -> Tag | None:
    parts = text.split("_")
    if len(parts) != 5 or not parts[2].isdigit():
        return None
    return Tag(parts[0], parts[1], int(parts[2]), parts[3], parts[4])


class Instance:
    """This process: tags its files and judges whether another tag's writer is provably dead."""

    def __init__(self, host_id: str | None = None) -> None:
        self.host = safe_host_id(host_id or socket.gethostname())
        boot = _read("/proc/sys/kernel/random/boot_id") or secrets.token_hex(8)
        # Where /proc cannot vouch for PIDs, this process judges no tag by its PID, and no
        # other process judges its tags (their start time was read from the wrong process):
        # a locality of its own. Every lease between them is waited out.
        self.sighted = _proc_is_ours()
        where = _pid_namespace() if self.sighted else f"unknown-{secrets.token_hex(8)}"
        self.locality = hashlib.sha1(f"{boot}/{where}".encode()).hexdigest()[:8]
        self.pid = os.getpid()
        self.start = process_start(self.pid) or "0"

    def tag(self) -> Tag:
        """A fresh tag: this process, plus 32 random bits so no two writes share a name."""
        return Tag(self.host, self.locality, os.getpid(), self.start, secrets.token_hex(4))

    def provably_dead(self, tag: Tag) -> bool:
        """True only when the tagged process cannot be running: same boot and PID namespace,
        and its PID is gone or belongs to a process started at another moment."""
        if tag.locality != self.locality or not self.sighted:
            return False
        if tag.pid == os.getpid():
            return tag.start != self.start
        start = process_start(tag.pid)
        return start is None or start != tag.start


_default: Instance | None = None


def default_instance() -> Instance:
    """The process-wide instance that names temp files (main() sets it from the config)."""
    global _default
    if _default is None or _default.pid != os.getpid():
        _default = Instance(_default.host if _default else None)
    return _default


def set_default_instance(instance: Instance) -> None:
    global _default
    _default = instance


def temp_name(base: str) -> str:
    """``.<base>.tmp-<tag>``: unique across hosts, processes and calls."""
    return f".{base}.tmp-{default_instance().tag()}"


def temp_tag(name: str) -> Tag | None:
    """The writer's tag of a temp file name made by ``temp_name``; None for anything else."""
    if not name.startswith("."):
        return None
    _, sep, tag = name.rpartition(".tmp-")
    return parse_tag(tag) if sep else None
