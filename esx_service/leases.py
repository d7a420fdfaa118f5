"""Leases on the datastore itself: mutual exclusion that holds across hosts and restarts.

A lease is a folder (``dockvols/<vmgroup>/.lease-<volume>``) whose only entry is a folder
named after its holder's tag (``dockvols_common.instance``): the holder's *staging folder*.

- **Acquire**: create the staging folder (and the lease folder if missing), then list:
  alone means held; anyone else there means withdraw and try again after a random pause
  (with a linearizable directory, of two that both created an entry at least one sees the
  other, so two can never both be alone).
- **Renew**: the holder touches its staging folder every ``lease_seconds / 4``.
- **Expire and take over**: a waiter watches the other entries' stamps with its *own*
  monotonic clock, so no two hosts' clocks are ever compared. An entry whose stamp has not
  changed for ``lease_seconds`` (or whose writer is provably dead, same boot and PID
  namespace) is renamed away (atomic: of two takers one wins) into a *grave*
  (``.dead-<random>``). Graves are the next holder's: it gets them with the lease
  (``Lease.graves``), finishes what their dead holders marked there (the volume layer,
  through ``cluster_locks``), and only then deletes them with whatever temp files they
  hold. Not the taker that buried one: it may not become the holder, and the work must be
  done under the lease.
- **Marks**: a holder may leave marks in its staging folder (``cluster_locks``: a create
  under way, a record moved aside by a remove) for the work a crash would leave half
  done. A holder whose clean-up failed *abandons* its lease: the release leaves its
  staging folder, marks and all, for the next holder to find in a grave.
- **Fencing**: every metadata write of a holder is staged in its staging folder and renamed
  from there into place. Once a lease is taken over, that folder no longer exists under its
  name, so the late rename fails (``LeaseLost``): the datastore itself refuses a write from a
  host that lost its lease, however long it was paused. A holder also stops trusting its
  lease ``lease_seconds * 3 / 4`` after its last renewal (``Lease.check``) before steps that
  are not metadata writes (making a disk, attaching a loop device).
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockvols_common.instance import Instance, parse_tag

from .errors import LeaseLost, VolumeBusy
from .lease_store import LeaseStore

log = logging.getLogger("dockvols.leases")
TRUST = 0.75  # of lease_seconds after the last renewal: the holder's own safety margin
GRAVE = ".dead-"  # a dead holder's entry, renamed away


@dataclass
class Lease:
    datastore: str
    path: str          # the lease folder, relative to the datastore
    tag: str           # the holder's entry in it
    what: str          # for messages: "volume db@ds1", "quota of team-a on ds1"
    lease_seconds: float
    clock: Callable[[], float]
    renewed_at: float
    lost: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # What this holder last read or wrote under the lease (the volume layer's metadata):
    # while the lease holds nobody else writes, so it need not be read again (issue 15).
    memo: dict[str, Any] = field(default_factory=dict)
    # Work sent under the lease whose end nobody has read yet (a fenced delete's move,
    # issue 15): read before anything else is written under the lease, and before the
    # lease is reused or let go (settle).
    pending: list[Callable[[], None]] = field(default_factory=list)
    # Entries of dead holders in the lease folder (``.dead-*``), found when the lease was
    # taken: the holder's to finish and delete (LeaseManager.bury).
    graves: list[str] = field(default_factory=list)
    abandoned: bool = False  # released without deleting the staging folder (its marks)

    def later(self, finish: Callable[[], None]) -> None:
        """Have ``finish`` (which waits for work already sent) run at the next ``settle``."""
        self.pending.append(finish)

    def settle(self) -> None:
        """Wait for the work sent under the lease and not waited for. One that failed is
        logged, and what the holder remembers of the metadata is forgotten: the next
        operation reads the files again."""
        while self.pending:
            finish = self.pending.pop(0)
            try:
                finish()
            except Exception as exc:  # whatever it was: read the files again
                log.warning("work sent under the lock on %s did not finish: %s", self.what,
                            exc)
                self.memo.clear()

    @property
    def staging(self) -> str:
        """Where this holder stages its writes (relative to the datastore)."""
        return f"{self.path}/{self.tag}"

    def check(self) -> None:
        """Raise LeaseLost unless this holder can still trust its lease."""
        if self.lost:
            raise LeaseLost(f"the lock on {self.what} was taken over by another host; nothing "
                            "more was written, retrying is safe")
        if self.clock() - self.renewed_at > self.lease_seconds * TRUST:
            raise LeaseLost(f"the lock on {self.what} was not renewed for "
                            f"{self.clock() - self.renewed_at:.1f}s (lease "
                            f"{self.lease_seconds:g}s); retrying is safe")

    def lost_error(self) -> LeaseLost:
        self.lost = True
        return LeaseLost(f"the lock on {self.what} was taken over by another host before this "
                         "write; it was refused, retrying is safe")


class LeaseManager:
    def __init__(self, store: LeaseStore, instance: Instance, lease_seconds: float = 15.0,
                 wait_seconds: float = 90.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive: {lease_seconds}")
        self.store = store
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._held: dict[int, Lease] = {}
        self._guard = threading.Lock()
        # (datastore, entry path) -> (stamp, when this process first saw that stamp)
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- acquire / release ------------------------------------------------------------
    def acquire(self, datastore: str, path: str, what: str, wait: bool = True) -> Lease | None:
        """Hold the lease at ``path``; None when ``wait`` is False and another holds it.
        Raises VolumeBusy naming the holder after ``wait_seconds``."""
        tag = str(self.instance.tag())
        mine = f"{path}/{tag}"
        deadline = self._clock() + self.wait_seconds
        # Enter first, look second (issue 15): uncontended, a take is one create and one
        # listing (remotely 3 round trips, not 6). Safe as before: whoever enters lists
        # after entering, so of two entrants at least one sees the other.
        entered = self.store.enter(datastore, mine)
        while True:
            names = self.store.list_dir(datastore, path)
            others = [e for e in names if not e.startswith(".") and e != tag]
            if others:
                live = [e for e in others if not self._take_if_dead(datastore, path, e)]
                if not live:
                    continue  # the dead are gone: look again
                if entered:  # a contender came in beside us: both step back, randomly
                    self.store.remove_tree(datastore, mine)
                    entered = False
                    self._sleep(random.uniform(1, 5) * self.store.poll_seconds)
                    continue
                if not wait or self._clock() > deadline:
                    if not wait:
                        return None
                    raise VolumeBusy(f"{what} is locked by host {_host_of(live[0])} (lease "
                                     f"{live[0]}) for an operation in progress; tried for "
                                     f"{self.wait_seconds:g}s, retry later")
                self._sleep(random.uniform(1, 2) * self.store.poll_seconds)
                continue
            if entered:
                lease = Lease(datastore, path, tag, what, self.lease_seconds, self._clock,
                              renewed_at=self._clock(),
                              graves=sorted(e for e in names if e.startswith(GRAVE)))
                self._forget(datastore, path)
                with self._guard:
                    self._held[id(lease)] = lease
                return lease
            # Stamp our clock before creating the entry: a waiter's view of it starts later.
            entered = self.store.enter(datastore, mine)

    def release(self, lease: Lease) -> None:
        with self._guard:
            self._held.pop(id(lease), None)
        lease.settle()  # a deferred move into the staging folder ends before it goes
        with lease.lock:
            lease.lost = True  # nothing may be written through it any more
            if lease.abandoned:  # its marks stay: it expires, and its taker finishes them
                log.warning("leaving the lease on %s to expire: what it marked is for its "
                            "next holder to finish", lease.what)
                return
            self.store.remove_tree(lease.datastore, lease.staging)
        self.store.remove_empty_dir(lease.datastore, lease.path)

    def bury(self, lease: Lease) -> None:
        """Delete the graves found with the lease, their work done."""
        while lease.graves:
            self.store.remove_tree(lease.datastore, f"{lease.path}/{lease.graves[0]}")
            lease.graves.pop(0)

    def _take_if_dead(self, datastore: str, path: str, entry: str) -> bool:
        """Bury ``entry`` if its holder is dead; True when it is gone (buried or vanished)."""
        full = f"{path}/{entry}"
        tag = parse_tag(entry)
        dead = tag is not None and self.instance.provably_dead(tag)
        if not dead:
            stamp = self.store.stamp(datastore, full)
            if stamp is None:
                return True
            now = self._clock()
            seen = self._seen.get((datastore, full))
            if seen is None or seen[0] != stamp:
                self._seen[(datastore, full)] = (stamp, now)
                return False
            if now - seen[1] <= self.lease_seconds:
                return False
        grave = f"{path}/{GRAVE}{secrets.token_hex(6)}"
        if self.store.rename(datastore, full, grave):
            log.warning("took over the lease %s on %s from %s (%s)", path, datastore, entry,
                        "its process is gone" if dead else
                        f"not renewed for {self.lease_seconds:g}s")
        self._seen.pop((datastore, full), None)
        return True

    def _forget(self, datastore: str, path: str) -> None:
        prefix = f"{path}/"
        for key in [k for k in self._seen if k[0] == datastore and k[1].startswith(prefix)]:
            self._seen.pop(key, None)

    # -- renewal ----------------------------------------------------------------------
    def renew_all(self) -> None:
        with self._guard:
            held = list(self._held.values())
        for lease in held:
            with lease.lock:
                if lease.lost:
                    continue
                started = self._clock()
                try:
                    alive = self.store.touch(lease.datastore, lease.staging)
                except Exception as exc:  # keep renewing the others; check() will tell
                    log.error("renewing the lease on %s failed: %s", lease.what, exc)
                    continue
                if alive:
                    lease.renewed_at = started
                else:
                    lease.lost = True
                    log.error("the lease on %s was taken over by another host", lease.what)

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer",
                                             daemon=True)
            self._renewer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
            self._renewer = None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            self.renew_all()


def _host_of(entry: str) -> str:
    tag = parse_tag(entry)
    return tag.host if tag else entry
