"""The few atomic datastore operations leases are built from, and their local-file form.

Every datastore dockvols supports offers them: VMFS, vSAN and NFS through the host's mount
(``/vmfs/volumes/<ds>`` on ESXi, a directory for the local backend), and the vSphere API
remotely (FileManager.MakeDirectory / MoveDatastoreFile, the datastore browser:
``esx_service.vsphere.lease_store``). Paths are relative to the datastore's root.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from dockvols_common.atomic import fsync_dir

from .errors import BackendError


class LeaseStore(Protocol):
    poll_seconds: float  # how often a waiter looks again: cheap locally, a round trip remotely
    keep_seconds: float  # how long a lease outlives its operation for the next (cluster_locks)

    def ensure_dir(self, datastore: str, relative: str) -> None:
        """Create the folder and its parents; existing is fine."""

    def create_dir(self, datastore: str, relative: str) -> bool:
        """Create exactly this folder, atomically: False if it exists already or its parent
        does not exist (the caller looks again)."""

    def enter(self, datastore: str, relative: str) -> bool:
        """Create a holder's entry (a fresh name nobody else ever creates) and the lease
        folder it is in if that is missing; False if it could not be made."""

    def list_dir(self, datastore: str, relative: str) -> list[str]:
        """Names in the folder, hidden ones included; [] when it does not exist."""

    def list_times(self, datastore: str, relative: str) -> dict[str, float]:
        """Names in the folder with when each was last changed, in seconds since the epoch
        by the datastore's clock (comparable with Backend.file_times); {} when it does not
        exist."""

    def stamp(self, datastore: str, relative: str) -> str | None:
        """A value that changes on every ``touch`` of the entry; None when it is gone."""

    def touch(self, datastore: str, relative: str) -> bool:
        """Renew the entry's stamp; False when it is gone (the lease was taken over)."""

    def rename(self, datastore: str, source: str, target: str) -> bool:
        """Atomically move ``source`` to the new name ``target``; False if source is gone."""

    def remove_tree(self, datastore: str, relative: str) -> None:
        """Delete a folder (or file) and all it holds; missing is fine."""

    def remove_empty_dir(self, datastore: str, relative: str) -> None:
        """Delete the folder if it is empty; missing or not empty is fine."""

    def remove_file(self, datastore: str, relative: str) -> None:
        """Delete one file; missing is fine."""


class LocalLeaseStore:
    """Datastores as directories of this host (the local backend; VMFS/NFS on ESXi)."""

    poll_seconds = 0.01
    # A take and release is two mkdirs, a listing and two rmdirs: 0.7 to 2.9 ms on a loaded
    # ext4 here, one per operation. Kept a quarter second, Docker's Mount right after its
    # Create (and a Remove right after its Unmount) reuses it; another host waits at most
    # 0.4 s longer (the keep and the keeper's half period). Kept 1 s, the multi-host races
    # (tests/integration/test_multi_host.py, every operation contended) ran five times
    # slower (issue 15).
    keep_seconds = 0.25

    def __init__(self, root: Callable[[str], str]) -> None:
        self._root = root

    def path(self, datastore: str, relative: str) -> str:
        return os.path.join(self._root(datastore), relative)

    def ensure_dir(self, datastore: str, relative: str) -> None:
        with _failing("creating", datastore, relative):
            try:
                os.makedirs(self.path(datastore, relative), exist_ok=True)
            except FileExistsError:
                # makedirs saw it exist, then found it gone (a holder released it
                # meanwhile): the caller's next step notices and comes back
                return

    def create_dir(self, datastore: str, relative: str) -> bool:
        with _failing("creating", datastore, relative):
            try:
                os.mkdir(self.path(datastore, relative), 0o755)
                return True
            except (FileExistsError, FileNotFoundError):
                return False

    def enter(self, datastore: str, relative: str) -> bool:
        # Not makedirs: a holder releasing meanwhile may remove the empty lease folder
        # between its creation and the entry's, which makedirs would report as an error.
        if self.create_dir(datastore, relative):
            return True
        self.ensure_dir(datastore, relative.rpartition("/")[0])
        return self.create_dir(datastore, relative)

    def list_dir(self, datastore: str, relative: str) -> list[str]:
        with _failing("listing", datastore, relative):
            try:
                return os.listdir(self.path(datastore, relative))
            except (FileNotFoundError, NotADirectoryError):
                return []

    def list_times(self, datastore: str, relative: str) -> dict[str, float]:
        times: dict[str, float] = {}
        with _failing("listing", datastore, relative):
            try:
                entries = list(os.scandir(self.path(datastore, relative)))
            except (FileNotFoundError, NotADirectoryError):
                return {}
            for entry in entries:
                try:
                    times[entry.name] = entry.stat(follow_symlinks=False).st_mtime_ns / 1e9
                except FileNotFoundError:
                    continue  # gone since the listing
        return times

    def stamp(self, datastore: str, relative: str) -> str | None:
        with _failing("reading", datastore, relative):
            try:
                return str(os.stat(self.path(datastore, relative)).st_mtime_ns)
            except FileNotFoundError:
                return None

    def touch(self, datastore: str, relative: str) -> bool:
        now = time.time_ns()
        with _failing("renewing", datastore, relative):
            try:
                os.utime(self.path(datastore, relative), ns=(now, now))
                return True
            except FileNotFoundError:
                return False

    def rename(self, datastore: str, source: str, target: str) -> bool:
        with _failing("renaming", datastore, source):
            try:
                os.rename(self.path(datastore, source), self.path(datastore, target))
                return True
            except FileNotFoundError:
                return False

    def remove_tree(self, datastore: str, relative: str) -> None:
        path = self.path(datastore, relative)
        with _failing("deleting", datastore, relative):
            try:
                # A released lease's staging folder is empty (its writes were renamed into
                # place): one rmdir, not rmtree's scan of it (issue 15: two per operation).
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    def remove_empty_dir(self, datastore: str, relative: str) -> None:
        with _failing("deleting", datastore, relative):
            try:
                os.rmdir(self.path(datastore, relative))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    raise

    def remove_file(self, datastore: str, relative: str) -> None:
        with _failing("deleting", datastore, relative):
            try:
                os.unlink(self.path(datastore, relative))
            except FileNotFoundError:
                pass


def park_file(path: str, staging: str, name: str, what: str,
              lost: Callable[[], BaseException]) -> None:
    """Move ``path`` into a lease's staging folder as ``name``, durably (a remove's record,
    before its disk goes): one fsync commits the rename, since ext4 and XFS journal both
    folders' entries in one transaction. Raises ``lost()`` when the staging folder is gone
    (the lease was taken over), BackendError naming ``what`` for anything else."""
    try:
        try:
            os.rename(path, os.path.join(staging, name))
        except FileNotFoundError as exc:
            if not os.path.isdir(staging):
                raise lost() from exc
            raise BackendError(f"moving {what} aside: {path} is gone") from exc
        fsync_dir(staging)
    except OSError as exc:
        raise BackendError(f"moving {what} aside failed: {exc}") from exc


def unpark_file(path: str, staging: str, name: str, what: str) -> None:
    """Move a parked file back into place, durably."""
    try:
        os.rename(os.path.join(staging, name), path)
        fsync_dir(os.path.dirname(path))
    except OSError as exc:
        raise BackendError(f"moving {what} back failed: {exc}") from exc


@contextmanager
def _failing(doing: str, datastore: str, relative: str) -> Iterator[None]:
    """An OSError of a datastore file operation, as the BackendError that names the file."""
    try:
        yield
    except OSError as exc:
        raise BackendError(f"{doing} [{datastore}] {relative} failed: {exc}") from exc
