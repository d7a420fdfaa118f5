"""Values parsed from files, reused while a stat proves the file unchanged: List of
thousands of volumes must not open and parse thousands of JSON files per call (issue 15).

Validated on every use, never trusted: ``get(path)`` stats the path and hands back the
cached value only when device, inode, size, modification and change time all equal those
of the open file the value was parsed from (``fstat`` of that very descriptor, so the value
and its identity belong to one inode). Metadata is only ever replaced by renaming a new
file over the old one (esx_service/atomic.py): a change is a new inode with new times, and
a write in place (by hand) changes the times and usually the size.

What could still make a stale value look current, and how it is closed:
- Coarse timestamps: a file system whose times tick coarsely (ext3: 1 s, others a jiffy)
  gives two writes within one tick equal times, and ext4 reuses a freed inode number soon.
  So a value is kept only if the file's times were already ``racy_seconds`` old when it was
  read (git's "racily clean" rule): any later change then lands in a later tick, with
  different times.
- Several hosts on one datastore: the other host's writes reach this one through the file
  system (VMFS, NFS), whose ``stat`` answers the same identity as its ``open``; the times
  are set by the writer's clock, so a writer whose clock is behind this host's by more than
  ``racy_seconds`` defeats the racy rule, and a stale value then still needs an inode number
  reused for a file of the same size with equal times to the nanosecond. NFS clients cache
  attributes (``actimeo``) where ``open`` revalidates: mount shared datastores with
  ``noac`` (as leases on them already need).
Reads that decide anything (an operation's own metadata, read under its lock) do not use
this cache; listings do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Signature = tuple[int, int, int, int, int]
RACY_SECONDS = 2.0


def signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ParsedFiles(Generic[T]):
    """``path -> parse(bytes)``, kept per folder: ``forget_missing`` drops what a listing of
    the folder no longer shows, so the cache holds at most what the folders hold."""

    def __init__(self, parse: Callable[[bytes], T], racy_seconds: float | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._parse = parse
        self._racy_ns = int((RACY_SECONDS if racy_seconds is None else racy_seconds) * 1e9)
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._folders: dict[str, dict[str, tuple[Signature, T]]] = {}

    def get(self, folder: str, name: str) -> T:
        """The value of the file ``name`` in ``folder``: cached if provably unchanged, else
        read and parsed now. Raises what ``open`` and ``parse`` raise (FileNotFoundError
        when it is gone)."""
        path = f"{folder}{os.sep}{name}"  # os.path.join costs as much as the stat
        cached = self._folders.get(folder, {}).get(name)
        if cached is not None:
            try:
                now = signature(os.stat(path))
            except FileNotFoundError:
                self._store(folder, name, None)
                raise
            if now == cached[0]:
                return cached[1]
        read_at = self._clock_ns()
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        value = self._parse(data)
        # too fresh to tell a later change within the same tick from this one: not kept
        fresh = read_at - max(st.st_mtime_ns, st.st_ctime_ns) <= self._racy_ns
        self._store(folder, name, None if fresh else (signature(st), value))
        return value

    def _store(self, folder: str, name: str, entry: tuple[Signature, T] | None) -> None:
        with self._lock:
            files = self._folders.setdefault(folder, {})
            if entry is None:
                files.pop(name, None)
            else:
                files[name] = entry

    def forget(self, folder: str, name: str) -> None:
        """Drop the file ``name`` of ``folder`` (it was deleted)."""
        self._store(folder, name, None)

    def forget_missing(self, folder: str, present: set[str]) -> None:
        """Drop cached files of ``folder`` whose names are not in ``present``."""
        with self._lock:
            files = self._folders.get(folder)
            if files is None:
                return
            for name in [n for n in files if n not in present]:
                del files[name]
            if not files:
                del self._folders[folder]

    def __len__(self) -> int:
        return sum(len(files) for files in self._folders.values())
