"""Crash-safe file replacement: write a temp file, fsync it, rename, fsync the directory.

Temp names carry the writer's tag (host, boot/PID namespace, PID, start time, random), so two
hosts writing one datastore never share one, and recovery can tell a dead writer's leftover
(``dockvols_common.instance.temp_tag``). ``tmp_dir`` puts the temp file elsewhere on the same
filesystem: a lease's staging folder, so that the rename fails once the lease is taken over.
"""

from __future__ import annotations

import json
import os

from .instance import temp_name


def atomic_write_bytes(path: str, data: bytes, durable: bool = True,
                       tmp_dir: str | None = None, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once. ``durable=False`` skips the fsyncs, for
    caches that may lose their last update in a crash but must never be half written.
    ``sync_dir=False`` keeps the file's fsync and skips the directory's: a crash then leaves
    either the old or the new file, each complete, for a caller that fsyncs the directory
    later in the same operation or whose record the next start rebuilds (issue 15)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(tmp_dir or directory, temp_name(os.path.basename(path)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]  # a short write is not an error
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable and sync_dir:
        fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make the names in ``directory`` (a rename into or out of it) durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str, obj: object, durable: bool = True,
                      tmp_dir: str | None = None, sync_dir: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n",
                       durable, tmp_dir, sync_dir)
