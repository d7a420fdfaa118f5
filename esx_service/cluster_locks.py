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

**Kept leases** (issue 15): where taking and releasing a lease costs round trips (the
vSphere file API: 3 to take, 2 to release), a lease is kept for ``keep_seconds`` after the
operation that took it ends, still renewed, and the next operation on the same key in this
process uses it without a round trip (Docker's Create is followed by Mount at once, Unmount
often by Remove). A kept lease is exactly a held one: other hosts wait for it (at most
``keep_seconds`` longer than before), its staging folder fences writes, and a holder that
crashes while keeping it is taken over like one that crashed mid-operation. Before reuse it
must still be trusted (``Lease.check``); else it is dropped and a fresh one taken. On a
mounted datastore (``keep_seconds`` 0) leases are released at once, as before.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from dockvols_common.instance import parse_tag, temp_tag
from dockvols_common.locks import NamedLocks

from .errors import DockvolsError, LeaseLost
from .file_names import file_stem, name_of_stem
from .leases import GRAVE, Lease, LeaseManager

log = logging.getLogger("dockvols.locks")
LEASE_PREFIX = ".lease-"
QUOTA_LEASE = ".quota.lease"
SPACE_LEASE = ".space.lease"
# A mark in a holder's staging folder: work a crash would leave half done, which the next
# holder finishes (VolumeLocks.on_takeover): ``.mark-create-<n>``, ``.mark-remove-...``.
MARK = ".mark-"


class VolumeLocks(Protocol):
    def hold(self, key: str, fresh: bool = False) -> AbstractContextManager[None]:
        """Exclusive use of ``key`` while the context lasts (waits, bounded). ``fresh``: not
        through a lease kept from an operation before (whose marks it would inherit)."""

    def try_hold(self, key: str) -> AbstractContextManager[bool]:
        """Like ``hold``, but yields False at once when someone else holds ``key``."""

    def fence(self, key: str) -> Lease | None:
        """The lease this process holds for ``key``, for fenced writes; None if local only."""

    def mark(self, key: str, what: str) -> str | None:
        """Leave a mark of ``what`` (``create``) in the staging folder of the lease held for
        ``key``, refused once the lease is lost; its name, or None where there are no
        leases (nobody else to finish anything)."""

    def unmark(self, key: str, mark: str) -> None:
        """Take back a mark whose work turned out not to be this operation's to finish."""

    def abandon(self, key: str) -> None:
        """Let the lease held for ``key`` expire at release, marks and all, for its next
        holder to finish what this one could not clean up."""

    def on_takeover(self, finish: Callable[[str, dict[str, float]], None]) -> None:
        """Call ``finish(key, marks)`` with the marks of the dead holders whose entries the
        lease for ``key`` took over (each with when it was made, by the datastore's clock),
        under that lease, before the operation holding it."""

    def sweep(self, datastore: str) -> int:
        """Remove temp files and lease leftovers whose writers are provably dead; how many."""

    def close(self) -> None:
        """Let go of everything still held between operations (service shutdown)."""


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
    def hold(self, key: str, fresh: bool = False) -> Iterator[None]:
        with self._local.hold(key):
            yield

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        with self._local.hold(key):
            yield True

    def fence(self, key: str) -> Lease | None:
        return None

    def mark(self, key: str, what: str) -> str | None:
        return None

    def unmark(self, key: str, mark: str) -> None:
        return None

    def abandon(self, key: str) -> None:
        return None

    def on_takeover(self, finish: Callable[[str, dict[str, float]], None]) -> None:
        return None

    def sweep(self, datastore: str) -> int:
        return 0  # no lease store: the backend's own files are its business

    def close(self) -> None:
        return None


class ClusterLocks:
    def __init__(self, leases: LeaseManager, keep_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.leases = leases
        self._local = NamedLocks()
        self._held: dict[str, Lease] = {}  # key -> lease; one holder per key per process
        # How long a lease outlives its operation: the store says what a take costs.
        self.keep_seconds = leases.store.keep_seconds if keep_seconds is None else keep_seconds
        self._clock = clock
        self._kept: dict[str, tuple[Lease, float]] = {}  # key -> (lease, kept since)
        self._kept_guard = threading.Lock()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None
        self._finish: Callable[[str, dict[str, float]], None] | None = None
        self._marks = itertools.count(1)

    @contextmanager
    def hold(self, key: str, fresh: bool = False) -> Iterator[None]:
        with self._local.hold(key):
            if fresh:
                self._drop_kept(key)
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
        with self._lease_at(*where, wait=wait, key=key) as lease:
            if lease is None:
                yield False
                return
            self._held[key] = lease
            try:
                if lease.graves:
                    self._work_off_graves(key, lease)
                yield True
            finally:
                self._held.pop(key, None)

    def _work_off_graves(self, key: str, lease: Lease) -> None:
        """Finish what the dead holders marked, under the lease, then delete their graves.
        Should finishing fail, the graves stay for the next holder (and the operation fails
        with the reason)."""
        store = self.leases.store
        marks: dict[str, float] = {}
        for grave in lease.graves:
            listed = store.list_times(lease.datastore, f"{lease.path}/{grave}")
            for entry, made in listed.items():
                if entry.startswith(MARK):
                    marks[entry] = min(made, marks.get(entry, made))
        if marks:
            if self._finish is None or len(key.split("/")) != 3:  # nobody to finish them
                log.warning("leaving %s in %s on %s: nothing here finishes what they mark",
                            ", ".join(lease.graves), lease.path, lease.datastore)
                return
            self._finish(key, marks)
        self.leases.bury(lease)

    def mark(self, key: str, what: str) -> str | None:
        lease = self._held.get(key)
        if lease is None:
            return None
        name = f"{MARK}{what}-{next(self._marks)}"  # never there before: made, or refused
        if not self.leases.store.create_dir(lease.datastore, f"{lease.staging}/{name}"):
            raise lease.lost_error()  # the staging folder is gone: the lease was taken over
        return name

    def unmark(self, key: str, mark: str) -> None:
        lease = self._held.get(key)
        if lease is not None:
            self.leases.store.remove_tree(lease.datastore, f"{lease.staging}/{mark}")

    def abandon(self, key: str) -> None:
        lease = self._held.get(key)
        if lease is not None:
            lease.abandoned = True

    def on_takeover(self, finish: Callable[[str, dict[str, float]], None]) -> None:
        self._finish = finish

    @contextmanager
    def _lease_at(self, datastore: str, path: str, what: str,
                  wait: bool, key: str | None = None) -> Iterator[Lease | None]:
        """The lease at ``path``; with ``key`` (the caller holds its local lock), a kept
        one is reused and the lease is kept afterwards."""
        lease = self._reuse(key) if key is not None else None
        if lease is None:
            lease = self.leases.acquire(datastore, path, what, wait=wait)
        try:
            yield lease
        finally:
            if lease is not None and (key is None or not self._keep(key, lease)):
                self.leases.release(lease)

    def _reuse(self, key: str) -> Lease | None:
        with self._kept_guard:
            kept = self._kept.pop(key, None)
        if kept is None:
            return None
        lease = kept[0]
        lease.settle()  # what the operation before sent and did not wait for
        try:
            lease.check()  # still renewed in time and not taken over
            return lease
        except LeaseLost as exc:
            log.info("not reusing the kept lease on %s: %s", lease.what, exc.message)
            self._drop(lease)
            return None

    def _drop_kept(self, key: str) -> None:
        with self._kept_guard:
            kept = self._kept.pop(key, None)
        if kept is not None:
            self._drop(kept[0])

    def _keep(self, key: str, lease: Lease) -> bool:
        if (self.keep_seconds <= 0 or lease.lost or lease.abandoned
                or self._closed.is_set()):
            return False
        with self._kept_guard:
            self._kept[key] = (lease, self._clock())
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap_loop, name="lease-keeper",
                                                daemon=True)
                self._reaper.start()
        return True

    def _drop(self, lease: Lease) -> None:
        try:
            self.leases.release(lease)
        except (DockvolsError, OSError) as exc:  # its holder's entry expires on its own
            log.warning("releasing the lease on %s failed: %s", lease.what, exc)

    def _reap_loop(self) -> None:
        while not self._closed.wait(max(self.keep_seconds / 2, 0.05)):
            self.release_kept(older_than=self.keep_seconds)

    def release_kept(self, older_than: float = 0.0) -> int:
        """Release kept leases idle for at least ``older_than`` seconds; how many. Each is
        released under its key's local lock, so never while an operation uses it."""
        with self._kept_guard:
            keys = list(self._kept)
        released = 0
        for key in keys:
            with self._local.hold(key):
                with self._kept_guard:
                    kept = self._kept.get(key)
                    if kept is None or self._clock() - kept[1] < older_than:
                        continue
                    del self._kept[key]
                self._drop(kept[0])
                released += 1
        return released

    def close(self) -> None:
        """Release every kept lease and keep no more (service shutdown)."""
        self._closed.set()
        if self._reaper is not None:
            self._reaper.join(5)
        self.release_kept()

    def fence(self, key: str) -> Lease | None:
        return self._held.get(key)

    def sweep(self, datastore: str) -> int:
        """Temp files (``.<file>.tmp-<tag>``, and the old ``.<file>.tmp-<pid>``) are removed
        when their writer is provably dead (``Instance.provably_dead``) or under the lease
        of the volume they belong to: every writer of a volume's files holds that lease, so
        whoever wrote one while we hold it is dead or fenced, and its rename would fail
        anyway. A temp file of a volume whose lease another host holds is left alone. Graves
        of taken-over leases (``.dead-*``) and entries of provably dead holders are worked
        off under their lease (``_sweep_lease_dir``); empty lease folders go too.

        Leases this process keeps are let go first: recovery has just held (and kept) the
        lease of every volume it looked at, and a kept entry of our own is, to the take
        below, a live holder; the sweep then left exactly the temp files it is for."""
        self.release_kept()
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
        """Graves, and entries of holders provably dead (this host's service before a
        restart): taken over and worked off under the lease, marks finished (a create or
        remove a crash cut short). A volume's lease is taken by its name, so the volume
        layer finishes the marks; a hashed stem does not hold its name, so its marked
        graves wait for that name's next operation."""
        store = self.leases.store
        entries = store.list_dir(datastore, path)
        graves = [e for e in entries if e.startswith(GRAVE)]
        dead = [e for e in entries if not e.startswith(".") and self._provably_dead(e)]
        if not graves and not dead:
            store.remove_empty_dir(datastore, path)
            return 0
        key = _volume_key(datastore, path)
        if key is not None:
            with self.try_hold(key) as mine:
                return len(graves) + len(dead) if mine else 0
        with self._lease_at(datastore, path, f"leftovers of {path}", wait=False) as lease:
            if lease is None:
                return 0
            marked = [g for g in lease.graves
                      if any(e.startswith(MARK)
                             for e in store.list_dir(datastore, f"{path}/{g}"))]
            if marked:
                log.warning("leaving %s in %s on %s: the volume's name is not in its file "
                            "name, so its next operation finishes what they mark",
                            ", ".join(marked), path, datastore)
                lease.graves = [g for g in lease.graves if g not in marked]
            removed = len(lease.graves)
            self.leases.bury(lease)
            return removed

    def _provably_dead(self, entry: str) -> bool:
        tag = parse_tag(entry)
        return tag is not None and self.leases.instance.provably_dead(tag)


def _volume_key(datastore: str, path: str) -> str | None:
    """The volume key of a volume's lease folder (``dockvols/<vmgroup>/.lease-<stem>``);
    None for a quota or space lease, or a stem that does not hold its name."""
    parts = path.split("/")
    if len(parts) != 3 or not parts[2].startswith(LEASE_PREFIX):
        return None
    name = name_of_stem(parts[2][len(LEASE_PREFIX):])
    return f"{datastore}/{parts[1]}/{name}" if name is not None else None


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
