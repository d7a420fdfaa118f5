"""Lease operations through the vSphere API, for a service that reaches datastores remotely
(vCenter, or an ESX host over the network). Same protocol as on a mounted datastore:

- create a folder atomically: FileManager.MakeDirectory without parents (FileAlreadyExists);
- rename atomically: FileManager.MoveDatastoreFile_Task with ``force=False``;
- list, and read stamps: the datastore browser with modification times;
- renew: make a fresh ``.hb-<n>`` folder inside the entry (never a /folder PUT: a PUT may
  create missing parents, as vcsim's does, and so bring a taken-over entry back), which
  changes the entry's modification time, then delete the previous one.

There is no "delete if empty" in the API (DeleteDatastoreFile deletes a folder with all it
holds, a contender's fresh entry included), so empty lease folders are left in place.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from pyVmomi import vim

from .datastore_files import make_folder
from .faults import translate
from .paths import ds_path
from .session import VsphereSession


class HttpLeaseStore:
    poll_seconds = 0.2  # every look is a round trip (or a task) to the server
    # Taking a lease costs 3 round trips and releasing it 2, so the volume layer keeps one
    # this long after its operation for the next on the same key (cluster_locks).
    keep_seconds = 2.0

    def __init__(self, session: VsphereSession, datacenter: vim.Datacenter,
                 browser: Callable[[str], vim.host.DatastoreBrowser]) -> None:
        self._session = session
        self._dc = datacenter
        self._browser = browser
        self._beats: dict[tuple[str, str], int] = {}
        self._counter = itertools.count(1)
        self._guard = threading.Lock()

    def _mkdir(self, datastore: str, relative: str, parents: bool) -> bool:
        return make_folder(self._session, self._dc, ds_path(datastore, relative), parents)

    def ensure_dir(self, datastore: str, relative: str) -> None:
        self._mkdir(datastore, relative, parents=True)

    def create_dir(self, datastore: str, relative: str) -> bool:
        return self._mkdir(datastore, relative, parents=False)

    def enter(self, datastore: str, relative: str) -> bool:
        # One MakeDirectory with parents: the entry's name is fresh, so it needs no
        # exclusive create, and lease folders are never removed here (no race with one
        # vanishing between the two creations).
        return self._mkdir(datastore, relative, parents=True)

    def _search(self, datastore: str, relative: str) -> list[vim.host.DatastoreBrowser.FileInfo]:
        browser = self._browser(datastore)
        spec = vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=["*"], details=vim.host.DatastoreBrowser.FileInfo.Details(
                modification=True))
        what = f"listing [{datastore}] {relative}"
        try:
            result = self._session.wait(self._session.invoke(
                lambda: browser.SearchDatastore_Task(datastorePath=ds_path(datastore, relative),
                                                     searchSpec=spec)), what)
        except vim.fault.FileNotFound:
            return []
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc
        return list(result.file or []) if result else []

    def list_dir(self, datastore: str, relative: str) -> list[str]:
        return [info.path for info in self._search(datastore, relative)]

    def list_times(self, datastore: str, relative: str) -> dict[str, float]:
        return {info.path: info.modification.timestamp()
                for info in self._search(datastore, relative) if info.modification}

    def stamp(self, datastore: str, relative: str) -> str | None:
        parent, _, name = relative.rpartition("/")
        for info in self._search(datastore, parent):
            if info.path == name:
                return str(info.modification)
        return None

    def touch(self, datastore: str, relative: str) -> bool:
        with self._guard:
            beat = next(self._counter)
            previous = self._beats.get((datastore, relative))
            self._beats[(datastore, relative)] = beat
        if not self._mkdir(datastore, f"{relative}/.hb-{beat}", parents=False):
            self._beats.pop((datastore, relative), None)
            return False  # the entry is gone: taken over
        if previous is not None:
            self.remove_tree(datastore, f"{relative}/.hb-{previous}")
        return True

    def rename(self, datastore: str, source: str, target: str) -> bool:
        fm = self._session.file_manager
        what = f"moving [{datastore}] {source} to {target}"
        try:
            self._session.wait(self._session.invoke(lambda: fm.MoveDatastoreFile_Task(
                sourceName=ds_path(datastore, source), sourceDatacenter=self._dc,
                destinationName=ds_path(datastore, target), destinationDatacenter=self._dc,
                force=False)), what)
            return True
        except vim.fault.FileNotFound:
            return False
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def remove_tree(self, datastore: str, relative: str) -> None:
        fm = self._session.file_manager
        what = f"deleting [{datastore}] {relative}"
        self._beats.pop((datastore, relative), None)
        try:
            self._session.wait(self._session.invoke(lambda: fm.DeleteDatastoreFile_Task(
                name=ds_path(datastore, relative), datacenter=self._dc)), what)
        except vim.fault.FileNotFound:
            pass
        except vim.fault.VimFault as exc:
            raise translate(exc, what) from exc

    def remove_empty_dir(self, datastore: str, relative: str) -> None:
        return None  # no atomic "delete if empty" in the API: see the module's docstring

    def remove_file(self, datastore: str, relative: str) -> None:
        self.remove_tree(datastore, relative)
