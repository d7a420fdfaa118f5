"""Small files (volume metadata) on datastores: through vSphere, or the host's own paths.

Remote (vCenter or ESX over the network): content goes through the ``/folder`` HTTP
interface with the session cookie; folder creation, rename, delete and listing through the
FileManager and the datastore browser. On the ESXi host itself the datastores are mounted
(``/vmfs/volumes/<name>``), so plain file I/O is both cheaper and atomic by rename.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from pyVmomi import vim

from dockvols_common.atomic import atomic_write_bytes
from dockvols_common.instance import temp_name

from ..backends.base import Fence
from ..errors import BackendError
from ..lease_store import park_file, unpark_file
from .faults import translate
from .paths import ds_path, split_ds_path
from .session import VsphereSession
from .tasks import TaskEnd


def make_folder(session: VsphereSession, datacenter: vim.Datacenter, path: str,
                parents: bool = True) -> bool:
    """FileManager.MakeDirectory of ``[ds] folder``: True when this call made it, False when
    it was there already (or, without ``parents``, its parent is missing)."""
    fm = session.file_manager
    passing: tuple[type[BaseException], ...] = (vim.fault.FileAlreadyExists,)
    if not parents:
        passing += (vim.fault.FileNotFound,)
    try:
        session.invoke(lambda: fm.MakeDirectory(name=path, datacenter=datacenter,
                                                createParentDirectories=parents))
        return True
    except passing:
        return False
    except vim.fault.VimFault as exc:
        raise translate(exc, f"creating folder {path}") from exc


@dataclass(frozen=True)
class SentWrite:
    """A metadata write whose last requests are sent and not yet waited for: read the ends
    of ``tasks`` (in one read, with others if need be), then ``finish`` with them, which
    raises what the write's failure is (LeaseLost where a fence refused it)."""

    tasks: list[vim.Task]
    finish: Callable[[list[TaskEnd]], None]


def written(_ends: list[TaskEnd]) -> None:
    """``SentWrite.finish`` of a write that ended before it was handed over."""


class DatastoreFiles(Protocol):
    def read(self, datastore: str, relative: str) -> bytes | None:
        """The file's bytes; None when it does not exist."""

    def write(self, datastore: str, relative: str, data: bytes,
              fence: Fence | None = None) -> None:
        """Replace the file atomically, creating its folder if needed; with a fence, the
        last rename is from the lease's staging folder, refused once the lease is lost."""

    def send_write(self, datastore: str, relative: str, data: bytes,
                   fence: Fence | None = None) -> SentWrite:
        """``write``, its last requests sent but not waited for where that saves a round
        trip (the vSphere API); elsewhere done at once (no tasks)."""

    def delete(self, datastore: str, relative: str, fence: Fence | None = None) -> None:
        """Remove the file (fenced like ``write``); missing is fine."""

    def park(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        """Move the file into the fence's staging folder as ``name`` and wait for it
        (Backend.park_metadata)."""

    def unpark(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        """Move it back into place."""

    def find(self, datastore: str, folder: str, pattern: str) -> list[str]:
        """Relative paths of files matching ``pattern`` in ``folder`` and its subfolders."""


class HttpDatastoreFiles:
    def __init__(self, session: VsphereSession, datacenter: vim.Datacenter,
                 datacenter_path: str,
                 browser: Callable[[str], vim.host.DatastoreBrowser]) -> None:
        self._session = session
        self._dc = datacenter
        self._dc_path = datacenter_path
        self._browser = browser  # datastore name -> its (cached) datastore browser

    def _url(self, datastore: str, relative: str) -> tuple[str, dict[str, str]]:
        # Stems are URL-safe already (file_names); quoting keeps any other path (an import
        # source, a vmgroup folder) from being cut at '#' or '?'.
        return (f"/folder/{quote(relative.lstrip('/'), safe='/')}",
                {"dcPath": self._dc_path, "dsName": datastore})

    def read(self, datastore: str, relative: str) -> bytes | None:
        path, query = self._url(datastore, relative)
        status, data = self._session.http("GET", path, query)
        if status == 404:
            return None
        if status != 200:
            raise BackendError(f"reading [{datastore}] {relative} over HTTP failed: "
                               f"status {status}")
        return data

    def write(self, datastore: str, relative: str, data: bytes,
              fence: Fence | None = None) -> None:
        sent = self.send_write(datastore, relative, data, fence)
        if sent.tasks:
            ends, _ = self._session.wait_all(sent.tasks, f"moving [{datastore}] {relative} "
                                             "into place")
            sent.finish(ends)

    def send_write(self, datastore: str, relative: str, data: bytes,
                   fence: Fence | None = None) -> SentWrite:
        """``write`` up to its moves, sent and not waited for: the caller reads their ends
        (``SentWrite.tasks``), with other tasks' in the same read if it likes, and hands
        them to ``SentWrite.finish`` (issue 15: a detach's record and its reconfigure end
        in one read)."""
        # The /folder PUT is not atomic on a host (a crash can leave half a file), so write
        # a temporary file beside the target and rename it over the target.
        folder, _, name = relative.rpartition("/")
        tmp = f"{folder}/{temp_name(name)}" if folder else temp_name(name)
        path, query = self._url(datastore, tmp)
        status, _ = self._session.http("PUT", path, query, data)
        if status in (403, 404, 409, 500) and folder:
            self.make_folder(datastore, folder)  # the host does not create parents on PUT
            status, _ = self._session.http("PUT", path, query, data)
        if status not in (200, 201, 204):
            raise BackendError(f"writing [{datastore}] {tmp} over HTTP failed: status {status}")
        if fence is None:
            try:
                task = self._send_move(datastore, tmp, relative, force=True)
            except vim.fault.VimFault as exc:
                raise translate(exc, f"renaming [{datastore}] {tmp} to {name}") from exc

            def renamed(ends: list[TaskEnd]) -> None:
                if ends[0].error is not None:
                    raise translate(ends[0].error, f"renaming [{datastore}] {tmp} to {name}")
            return SentWrite([task], renamed)
        fence.settle()  # a delete of this name sent before must end first
        # Into the staging folder first (a PUT may create missing parents, as vcsim does,
        # and so bring a taken-over staging folder back; a move never does), then from
        # there into place: that last move is what a lost lease refuses. Both moves are
        # sent before either is waited for, and both waited for in one read (4 round trips
        # with the PUT, not 5: issue 15).
        staged = f"{fence.staging}/{tmp.rpartition('/')[2]}"
        try:
            tasks = [self._send_move(datastore, tmp, staged, force=False),
                     self._send_move(datastore, staged, relative, force=True)]
        except vim.fault.VimFault as exc:
            self.delete(datastore, tmp)
            raise translate(exc, f"writing [{datastore}] {relative}") from exc

        def moved(ends: list[TaskEnd]) -> None:
            try:
                self._fenced_moves_ended(datastore, staged, relative, ends)
            except vim.fault.FileNotFound as exc:
                self.delete(datastore, tmp)
                raise fence.lost_error() from exc
            except vim.fault.VimFault as exc:
                self.delete(datastore, tmp)
                raise translate(exc, f"writing [{datastore}] {relative}") from exc
        return SentWrite(tasks, moved)

    def _fenced_moves_ended(self, datastore: str, staged: str, relative: str,
                            ends: list[TaskEnd]) -> None:
        """Judge the ends of tmp -> staged -> relative. The staged name is unique to this
        write, so the second move can only succeed after the first did. A server that ran
        the second before the first had finished answers it FileNotFound; then, the first
        having succeeded, the second is sent again. Raises the first fault that counts
        (FileNotFound of the first: the staging folder is gone, the lease lost)."""
        if ends[1].error is None:
            return
        if ends[0].error is not None:
            raise ends[0].error
        if not isinstance(ends[1].error, vim.fault.FileNotFound):
            raise ends[1].error
        self._move(datastore, staged, relative, force=True)

    def _send_move(self, datastore: str, source: str, target: str, force: bool) -> vim.Task:
        """Start the rename; its end is the caller's to read."""
        fm = self._session.file_manager
        return self._session.invoke(lambda: fm.MoveDatastoreFile_Task(
            sourceName=ds_path(datastore, source), sourceDatacenter=self._dc,
            destinationName=ds_path(datastore, target), destinationDatacenter=self._dc,
            force=force))

    def _move(self, datastore: str, source: str, target: str, force: bool) -> None:
        task = self._send_move(datastore, source, target, force)
        self._session.wait(task, f"moving [{datastore}] {source} to {target}")

    def make_folder(self, datastore: str, folder: str) -> None:
        make_folder(self._session, self._dc, ds_path(datastore, folder))

    def delete(self, datastore: str, relative: str, fence: Fence | None = None) -> None:
        if fence is not None:
            # Moved into the staging folder: refused once the lease is lost. It stays
            # there (issue 15: no delete task on the critical path): the staging folder is
            # deleted with all it holds when the lease is released or taken over, and the
            # next delete of this name in it replaces it. The move's end is not waited for
            # here (issue 15: one round trip less per remove) but before anything else is
            # written under the lease, and before the lease is reused or released
            # (Lease.settle). Until then the name may still hold the record it had: a
            # delete is always of a record nobody lists (`removing`, `creating`), and the
            # service's own reads under the lease remember it gone. Should the move fail
            # (the lease lost), that record stays for recovery or the name's next create,
            # as after a crash.
            fence.settle()
            staged = f"{fence.staging}/.deleted-{relative.rpartition('/')[2]}"
            what = f"deleting [{datastore}] {relative}"
            try:
                task = self._send_move(datastore, relative, staged, force=True)
            except vim.fault.VimFault as exc:
                raise translate(exc, what) from exc

            def finish() -> None:
                try:
                    self._session.wait(task, what)
                except vim.fault.FileNotFound as exc:
                    if self.read(datastore, relative) is not None:
                        raise fence.lost_error() from exc
                    # already gone
                except vim.fault.VimFault as exc:
                    raise translate(exc, what) from exc

            fence.later(finish)
            return
        fm = self._session.file_manager
        what = f"deleting [{datastore}] {relative}"
        try:
            task = self._session.invoke(lambda: fm.DeleteDatastoreFile_Task(
                name=ds_path(datastore, relative), datacenter=self._dc))
            self._session.wait(task, what)
        except vim.fault.FileNotFound:
            pass
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def park(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        fence.settle()
        what = f"moving [{datastore}] {relative} aside"
        try:
            self._move(datastore, relative, f"{fence.staging}/{name}", force=False)
        except vim.fault.FileNotFound as exc:
            if self.read(datastore, relative) is not None:
                raise fence.lost_error() from exc  # the staging folder is gone
            raise BackendError(f"{what}: the file is gone") from exc
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def unpark(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        try:
            self._move(datastore, f"{fence.staging}/{name}", relative, force=False)
        except vim.fault.VimFault as exc:
            raise translate(exc, f"moving [{datastore}] {relative} back") from exc

    def find(self, datastore: str, folder: str, pattern: str) -> list[str]:
        browser = self._browser(datastore)
        spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=[pattern])
        what = f"listing [{datastore}] {folder}"
        try:
            task = self._session.invoke(lambda: browser.SearchDatastoreSubFolders_Task(
                datastorePath=ds_path(datastore, folder), searchSpec=spec))
            results = self._session.wait(task, what) or []
        except vim.fault.FileNotFound:
            return []  # no volume was ever created on this datastore
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        found = []
        for result in results:
            _, base = split_ds_path(result.folderPath)
            for info in result.file or []:
                found.append(f"{base.rstrip('/')}/{info.path}" if base else info.path)
        return sorted(found)


class LocalDatastoreFiles:
    """Datastores as local directories: ``root(datastore)`` gives the mount point."""

    def __init__(self, root: Callable[[str], str]) -> None:
        self.root = root

    def _path(self, datastore: str, relative: str) -> str:
        return os.path.join(self.root(datastore), relative.lstrip("/"))

    def read(self, datastore: str, relative: str) -> bytes | None:
        try:
            with open(self._path(datastore, relative), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(f"reading [{datastore}] {relative} failed: {exc}") from exc

    def write(self, datastore: str, relative: str, data: bytes,
              fence: Fence | None = None) -> None:
        path = self._path(datastore, relative)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if fence is None:
                atomic_write_bytes(path, data)
                return
            try:
                atomic_write_bytes(path, data,
                                   tmp_dir=self._path(datastore, fence.staging))
            except FileNotFoundError as exc:
                raise fence.lost_error() from exc
        except OSError as exc:
            raise BackendError(f"writing [{datastore}] {relative} failed: {exc}") from exc

    def send_write(self, datastore: str, relative: str, data: bytes,
                   fence: Fence | None = None) -> SentWrite:
        self.write(datastore, relative, data, fence)  # a local rename: nothing to overlap
        return SentWrite([], written)

    def delete(self, datastore: str, relative: str, fence: Fence | None = None) -> None:
        path = self._path(datastore, relative)
        try:
            if fence is not None:
                staging = self._path(datastore, fence.staging)
                try:
                    os.rename(path, os.path.join(staging, ".deleted"))
                except FileNotFoundError as exc:
                    if not os.path.isdir(staging):
                        raise fence.lost_error() from exc
                    return
                path = os.path.join(staging, ".deleted")
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BackendError(f"deleting [{datastore}] {relative} failed: {exc}") from exc

    def park(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        park_file(self._path(datastore, relative), self._path(datastore, fence.staging), name,
                  f"[{datastore}] {relative}", fence.lost_error)

    def unpark(self, datastore: str, relative: str, fence: Fence, name: str) -> None:
        unpark_file(self._path(datastore, relative), self._path(datastore, fence.staging),
                    name, f"[{datastore}] {relative}")

    def find(self, datastore: str, folder: str, pattern: str) -> list[str]:
        root = self.root(datastore)
        found = []
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in fnmatch.filter(files, pattern):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
        return sorted(found)
