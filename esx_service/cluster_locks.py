"""The volume layer's locks: a process-local lock in front, a datastore lease behind it.

``hold(key)`` keeps the shape of ``NamedLocks.hold`` so every call site (and any new one using
the same key forms) gets cross-host exclusion. Keys and where their leases live:

=================================  ==============================================
``<ds>/<vmgroup>/<name>``          ``[ds] dockvols/<vmgroup>/.lease-<stem>``  (one volume)
``quota:<ds>/<vmgroup>``           ``[ds] dockvols/<vmgroup>/.quota.lease``   (create, resize)
``space:<ds>``                     ``[ds] dockvols/.space.lease``             (thick allocations)
=================================  ==============================================

``<stem>`` is the volume's file stem (``esx_service.file_names``). Any other key is
process-local only. File stems never start with ``.``, so no lease folder can clash with a
volume's files. Threads of one process queue on the local lock, so only one
of them at a time touches the datastore for a key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from dockvols_common.instance import temp_tag
from dockvols_common.locks import NamedLocks

from .file_names import file_stem
from .leases import Lease, LeaseManager

log = logging.getLogger("dockvols.locks")
LEASE_PREFIX = ".lease-"
QUOTA_LEASE = ".quota.lease"
SPACE_LEASE = ".space.lease"


class VolumeLocks(Protocol):
    def hold(self, key: str) -> AbstractContextManager[None]:
        """Exclusive use of ``key`` while the context lasts (waits, bounded)."""

    def try_hold(self, key: str) -> AbstractContextManager[bool]:
        """Like ``hold``, but yields False at once when someone else holds ``key``."""

    def fence(self, key: str) -> Lease | None:
        """The lease this process holds for ``key``, for fenced writes; None if local only."""

    def sweep(self, datastore: str) -> int:
        """Remove temp files and lease leftovers whose writers are provably dead; how many."""


def lease_path(key: str) -> tuple[str, str, str] | None:
    """(datastore, lease folder, description) of a key; None for a process-local key."""
    if key.startswith("quota:"):
        datastore, _, vmgroup = key[len("quota:"):].partition("/")
        return datastore, f"dockvols/{vmgroup}/{QUOTA_LEASE}", f"quota of {vmgroup} on {datastore}"
    if key.startswith("space:"):
        datastore = key[len("space:"):]
        return datastore, f"dockvols/{SPACE_LEASE}", f"space of datastore {datastore}"
    parts = key.split("/")
    if len(parts) == 3 and all(parts):
        datastore, vmgroup, name = parts
        return (datastore, f"dockvols/{vmgroup}/{LEASE_PREFIX}{file_stem(name)}",
                f"volume {name}@{datastore}")
    return None


class LocalVolumeLocks:
    """One process owns the datastore (unit tests, a single service): no leases."""

    def __init__(self) -> None:
        self._local = NamedLocks()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._local.hold(key):
            yield

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        with self._local.hold(key):
            yield True

    def fence(self, key: str) -> Lease | None:
        return None

    def sweep(self, datastore: str) -> int:
        return 0  # no lease store: the backend's own files are its business


class ClusterLocks:
    def __init__(self, leases: LeaseManager) -> None:
        self.leases = leases
        self._local = NamedLocks()
        self._held: dict[str, Lease] = {}  # key -> lease; one holder per key per process

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._local.hold(key):
            with self._leased(key, wait=True) as got:
                assert got
                yield

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        with self._local.hold(key):
            with self._leased(key, wait=False) as got:
                yield got

    @contextmanager
    def _leased(self, key: str, wait: bool) -> Iterator[bool]:
        where = lease_path(key)
        if where is None:
            yield True
            return
        with self._lease_at(*where, wait=wait) as lease:
            if lease is None:
                yield False
                return
            self._held[key] = lease
            try:
                yield True
            finally:
                self._held.pop(key, None)

    @contextmanager
    def _lease_at(self, datastore: str, path: str, what: str,
                  wait: bool) -> Iterator[Lease | None]:
        lease = self.leases.acquire(datastore, path, what, wait=wait)
        try:
            yield lease
        finally:
            if lease is not None:
                self.leases.release(lease)

    def fence(self, key: str) -> Lease | None:
        return self._held.get(key)

    def sweep(self, datastore: str) -> int:
        """Temp files (``.<file>.tmp-<tag>``, and the old ``.<file>.tmp-<pid>``) are removed
        when their writer is provably dead (``Instance.provably_dead``) or under the lease
        of the volume they belong to: every writer of a volume's files holds that lease, so
        whoever wrote one while we hold it is dead or fenced, and its rename would fail
        anyway. A temp file of a volume whose lease another host holds is left alone. Graves
        of taken-over leases (``.dead-*``) and empty lease folders go too."""
        store, removed = self.leases.store, 0
        for group in store.list_dir(datastore, "dockvols"):
            if group.startswith("."):
                continue
            folder = f"dockvols/{group}"
            for entry in sorted(store.list_dir(datastore, folder)):
                if entry.startswith(LEASE_PREFIX) or entry == QUOTA_LEASE:
                    removed += self._sweep_lease_dir(datastore, f"{folder}/{entry}")
                    continue
                stem = _temp_owner(entry)
                if stem is None:
                    continue
                tag = temp_tag(entry)
                if tag is not None and self.leases.instance.provably_dead(tag):
                    store.remove_file(datastore, f"{folder}/{entry}")
                    removed += 1
                    continue
                with self._lease_at(datastore, f"{folder}/{LEASE_PREFIX}{stem}",
                                    f"volume files {folder}/{stem}", wait=False) as mine:
                    if mine is not None:
                        store.remove_file(datastore, f"{folder}/{entry}")
                        removed += 1
        if removed:
            log.info("removed %d dead temp files and lease leftovers on %s", removed, datastore)
        return removed

    def _sweep_lease_dir(self, datastore: str, path: str) -> int:
        store, removed = self.leases.store, 0
        for entry in store.list_dir(datastore, path):
            if entry.startswith(".dead-"):
                store.remove_tree(datastore, f"{path}/{entry}")
                removed += 1
        store.remove_empty_dir(datastore, path)
        return removed


_LEGACY_TEMP = re.compile(r"^\.(.+)\.tmp(-\d+)?$")


def _temp_owner(entry: str) -> str | None:
    """The file stem of the volume a temp file belongs to (``.<stem>.json.tmp-<tag>`` ->
    ``<stem>``); None for anything that is not a temp file."""
    if temp_tag(entry) is not None:
        base = entry[1:].rpartition(".tmp-")[0]
    elif match := _LEGACY_TEMP.match(entry):
        base = match.group(1)
    else:
        return None
    stem, dot, _ = base.rpartition(".")
    return stem if dot else base
