"""Freeing a removed disk's blocks off the Remove's path (the local backend).

Unlinking an extent makes the filesystem free its blocks before unlink(2) returns: 2 ms for
a 100 MB thin disk here, a tenth of a second or more for a big thick one, all of it inside
``docker volume rm`` (issue 15). The extent is instead renamed into its datastore's trash
folder, which takes microseconds, and a thread unlinks it there. A crash leaves the file in
the trash, where everything is garbage by construction: the next start frees it. Until it
is freed its bytes still count as free space (``pending``), so that a create right after a
remove is not refused for room the remove is about to give back.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid

log = logging.getLogger("dockvols.local.trash")
TRASH = os.path.join("dockvols", ".trash")  # in each datastore; the dot keeps it from listings
IDLE_EXIT = 5.0  # seconds the thread waits for more before it ends
SUFFIX = ".deleting"  # never *.vmdk: an import's search for disks must not find one here


class Trash:
    def __init__(self, roots: dict[str, str]) -> None:
        self._roots = dict(roots)
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._queue: queue.SimpleQueue[tuple[str, str, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._queued = 0

    def sweep(self) -> int:
        """Queue whatever an earlier process left in the trash (it crashed before freeing
        it); the count queued."""
        found = 0
        for datastore, root in self._roots.items():
            folder = os.path.join(root, TRASH)
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                self._queue_file(datastore, os.path.join(folder, name))
                found += 1
        return found

    def discard(self, datastore: str, path: str) -> None:
        """Make ``path`` gone now and its blocks free soon. Missing is fine."""
        folder = os.path.join(self._roots[datastore], TRASH)
        target = os.path.join(folder, uuid.uuid4().hex + SUFFIX)
        moved = False
        for _ in range(2):
            try:
                os.rename(path, target)
                moved = True
                break
            except FileNotFoundError:
                if not os.path.lexists(path):
                    return  # gone already
                os.makedirs(folder, exist_ok=True)  # the trash folder was missing
            except OSError as exc:  # another filesystem (a bind mount), a read-only trash
                log.warning("cannot move %s into the trash (%s): freeing it now", path, exc)
                break
        if not moved:  # freed here, as before the trash
            _unlink(path)
            return
        self._queue_file(datastore, target)

    def pending(self, datastore: str) -> int:
        """Bytes in the datastore's trash not freed yet."""
        with self._lock:
            return self._pending.get(datastore, 0)

    def wait_empty(self, timeout: float) -> bool:
        """Wait until every queued file is freed; False if some are left after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._queued == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Free what is queued (up to ``timeout``) and stop the thread; what is left stays in
        the trash for the next start."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _queue_file(self, datastore: str, path: str) -> None:
        try:
            size = os.stat(path).st_blocks * 512
        except FileNotFoundError:
            return  # another host's service freed it
        with self._lock:
            self._pending[datastore] = self._pending.get(datastore, 0) + size
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dockvols-trash",
                                                daemon=True)
                self._thread.start()
        self._queue.put((datastore, path, size))

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:  # nothing queued for a while: the next discard starts one
                    if self._queued == 0 and self._thread is threading.current_thread():
                        self._thread = None
                        return
                continue
            if item is None:
                return
            datastore, path, size = item
            try:
                _unlink(path)
            except OSError as exc:  # left for the next start's sweep
                log.error("freeing removed disk file %s failed: %s", path, exc)
            with self._idle:
                self._pending[datastore] -= size
                self._queued -= 1
                self._idle.notify_all()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
