"""Mount reference counts per volume, persisted so a plugin restart loses none.

A counter per (volume, mount ID), not a set: dockerd may Mount the same ID twice and then
Unmount it twice. ``recovered:<container>`` IDs stand for users found in the Docker engine
after a restart, whose real mount IDs are unknown.

Which disks this plugin asked the service to attach is kept here too: the service knows a
disk is attached to this VM, not which plugin on it attached it (a managed plugin and a
`make run` one, or two dockerds, share one VM), and recovery and the reconcile release only
what this plugin attached. A name is recorded before the attach is asked for, so a Mount
that dies while the service attaches still leaves a record, and dropped once detached.

An Unmount of an ID nobody counted, while recovered users remain, is one of those users
leaving; which one Docker cannot tell yet (a stopping container is still "running" in
Docker's view until all its Unmounts returned). So it is counted as one ``departed`` user:
a volume counts its real IDs plus ``recovered - departed``. Never adding users from Docker
at Unmount time is what keeps one container from being counted twice. When the reconcile
later sees a recovered container gone, it drops that entry and one departure with it.
"""

from __future__ import annotations

import json
import os
import threading
import time

from dockvols_common.atomic import atomic_write_bytes

# No page is smaller (4 KiB on x86 and arm64 alike); the kernel copies a write page by page
# and stops between pages only, so a write that stays in this first page is never cut.
_PAGE = 4096

RECOVERED = "recovered:"


def recovered_ids(containers: set[str]) -> dict[str, int]:
    """The counts that stand for these live containers: one ``recovered:<id>`` each."""
    return {f"{RECOVERED}{c}": 1 for c in containers}


class RefCounts:
    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._refs: dict[str, dict[str, int]] = {}
        self._aliases: dict[str, str] = {}
        self._departed: dict[str, int] = {}
        self._attached: set[str] = set()
        # when each mount ID was counted, in this process; IDs loaded from the file (a
        # previous plugin's) have none
        self._added_at: dict[tuple[str, str], float] = {}
        self._load()

    def _load(self) -> None:
        try:
            with open(self._path, encoding="utf-8") as f:
                data = json.load(f)
            refs = {str(v): {str(i): int(n) for i, n in ids.items() if int(n) > 0}
                    for v, ids in data.get("refs", {}).items()}
            aliases = {str(k): str(v) for k, v in data.get("aliases", {}).items()}
            departed = {str(v): int(n) for v, n in data.get("departed", {}).items()
                        if int(n) > 0}
            # A file from before this record: the volumes it counted were attached here.
            attached = {str(v) for v in data.get("attached", data.get("refs", {}))}
        except FileNotFoundError:
            return
        except (ValueError, TypeError, AttributeError):
            os.replace(self._path, self._path + ".corrupt")  # keep it for a post-mortem
            self.lost = True
            return
        self._refs = {v: ids for v, ids in refs.items() if ids}
        self._aliases = aliases
        self._departed = {v: n for v, n in departed.items() if v in self._refs}
        self._attached = attached

    lost = False  # True when the state file was unreadable and counting started empty

    def _total(self, volume: str) -> int:
        ids = self._refs.get(volume, {})
        real = sum(n for i, n in ids.items() if not i.startswith(RECOVERED))
        recovered = sum(1 for i in ids if i.startswith(RECOVERED))
        return real + max(0, recovered - self._departed.get(volume, 0))

    _dirty = False  # a change not written yet (release with save=False)
    _length: int | None = None  # the file's length as this process last wrote it

    def _save(self) -> None:
        self._dirty = False
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        # Only names of volumes in use need to survive a restart (Unmount and Path of them
        # must work with the service down); keeping the rest out keeps every write small.
        aliases = {n: c for n, c in self._aliases.items() if c in self._refs}
        # Atomic (never half written) but not fsynced: the counts must outlive a plugin
        # restart, which the page cache does; a host crash takes every mount and loop device
        # with it, and recovery recounts from Docker then. Two fsyncs fewer per Mount and
        # per Unmount (issue 15, bench/phases.py).
        state: dict = {"refs": self._refs, "aliases": aliases,
                       "attached": sorted(self._attached)}
        if self._departed:
            state["departed"] = self._departed
        data = json.dumps(state, indent=1, sort_keys=True).encode() + b"\n"
        if not self._rewrite_in_place(data):
            atomic_write_bytes(self._path, data, durable=False)
            self._length = len(data)

    def _rewrite_in_place(self, data: bytes) -> bool:
        """Overwrite the file within its first page, padded with blanks (JSON allows them)
        over what was longer: a write within one page is done whole or not at all, even
        under kill -9, and unlike the rename over the file, which makes ext4 write the new
        file's data out first (0.24 ms of 0.3 here, three times per container; issue 15),
        it costs a few microseconds. Larger states, or an unknown file, are replaced."""
        if self._length is None or max(self._length, len(data)) > _PAGE:
            return False
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.pwrite(fd, data.ljust(self._length, b" "), 0)
            if self._length > len(data):
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        self._length = len(data)
        return True

    def total(self, volume: str) -> int:
        """How many users the volume has: real mount IDs plus recovered users not departed."""
        with self._lock:
            return self._total(volume)

    def in_use(self) -> set[str]:
        """Every volume with users (``total`` > 0), under one hold of the lock: List asks
        this once rather than ``total`` per volume."""
        with self._lock:
            return {v for v in self._refs if self._total(v)}

    def ids(self, volume: str) -> dict[str, int]:
        with self._lock:
            return dict(self._refs.get(volume, {}))

    def volumes(self) -> list[str]:
        with self._lock:
            return sorted(self._refs)

    def mark_attached(self, volume: str) -> None:
        """This plugin is about to ask the service to attach ``volume``."""
        with self._lock:
            if volume not in self._attached:
                self._attached.add(volume)
                self._save()

    def mark_detached(self, volume: str) -> None:
        """``volume`` is detached from this VM (or was never attached by this plugin)."""
        with self._lock:
            if volume in self._attached:
                self._attached.discard(volume)
                self._save()

    def attached_here(self, volume: str) -> bool:
        """Whether this plugin attached ``volume`` (and has not detached it since): only
        then may it detach the volume for nobody; another plugin on this VM may be
        mounting it right now."""
        with self._lock:
            return volume in self._attached

    def add(self, volume: str, mount_id: str) -> int:
        with self._lock:
            ids = self._refs.setdefault(volume, {})
            ids[mount_id] = ids.get(mount_id, 0) + 1
            self._added_at[(volume, mount_id)] = time.monotonic()
            self._save()
            return self._total(volume)

    def release(self, volume: str, mount_id: str, save: bool = True) -> bool:
        """Drop one reference. An ID nobody counted is one recovered user departing while
        any are left; False if there is none (the Unmount matched nothing). ``save=False``
        leaves the file to the next save or ``flush`` (an Unmount of the last user: its
        detach's ``mark_detached`` writes both changes at once)."""
        with self._lock:
            ids = self._refs.get(volume, {})
            if ids.get(mount_id, 0) <= 0:
                recovered = sum(1 for i in ids if i.startswith(RECOVERED))
                departed = self._departed.get(volume, 0)
                if mount_id.startswith(RECOVERED) or departed >= recovered:
                    return False
                self._departed[volume] = departed + 1
            else:
                ids[mount_id] -= 1
                if ids[mount_id] == 0:
                    del ids[mount_id]
            self._drop_if_unused(volume)
            if save:
                self._save()
            else:
                self._dirty = True
            return True

    def flush(self) -> None:
        """Write what ``release(save=False)`` left unwritten, if no save wrote it since."""
        with self._lock:
            if self._dirty:
                self._save()

    def _drop_if_unused(self, volume: str) -> None:
        if self._total(volume) == 0:
            self._refs.pop(volume, None)
            self._departed.pop(volume, None)

    def replace(self, volume: str, ids: dict[str, int]) -> None:
        """Set a volume's counts outright (recovery): departures start again from zero."""
        with self._lock:
            self._departed.pop(volume, None)
            if ids:
                self._refs[volume] = dict(ids)
                now = time.monotonic()
                self._added_at.update({(volume, i): now for i in ids})
            else:
                self._refs.pop(volume, None)
            self._save()

    def recovered_users(self, volume: str) -> set[str]:
        """Container IDs of the volume's recovered users (departed ones included)."""
        with self._lock:
            return {i[len(RECOVERED):] for i in self._refs.get(volume, {})
                    if i.startswith(RECOVERED)}

    def forget_recovered(self, volume: str, containers: set[str]) -> int:
        """Drop recovered users that are gone; each takes one departure with it (its
        Unmount, if it reached us, was counted as one). Returns how many were dropped."""
        with self._lock:
            ids = self._refs.get(volume, {})
            gone = [f"{RECOVERED}{c}" for c in containers if f"{RECOVERED}{c}" in ids]
            if not gone:
                return 0
            for key in gone:
                del ids[key]
            left = self._departed.get(volume, 0) - len(gone)
            recovered = sum(1 for i in ids if i.startswith(RECOVERED))
            if min(left, recovered) > 0:
                self._departed[volume] = min(left, recovered)
            else:
                self._departed.pop(volume, None)
            self._drop_if_unused(volume)
            self._save()
            return len(gone)

    def unbacked_ids(self, volume: str, grace: float) -> tuple[list[str], list[str]]:
        """Real mount IDs (not recovered users) that could be stale: (counted in this
        process more than ``grace`` seconds ago, loaded from a previous plugin's file)."""
        now = time.monotonic()
        with self._lock:
            old, loaded = [], []
            for mount_id in self._refs.get(volume, {}):
                if mount_id.startswith(RECOVERED):
                    continue
                added = self._added_at.get((volume, mount_id))
                if added is None:
                    loaded.append(mount_id)
                elif now - added > grace:
                    old.append(mount_id)
            return old, loaded

    def drop(self, volume: str, mount_ids: list[str]) -> None:
        """Forget these mount IDs entirely (their Unmount will never come)."""
        with self._lock:
            ids = self._refs.get(volume, {})
            for mount_id in mount_ids:
                ids.pop(mount_id, None)
                self._added_at.pop((volume, mount_id), None)
            self._drop_if_unused(volume)
            self._save()

    def alias(self, name: str) -> str | None:
        with self._lock:
            return self._aliases.get(name)

    def set_alias(self, name: str, canonical: str) -> None:
        with self._lock:
            if self._aliases.get(name) != canonical:
                self._aliases[name] = canonical
                if canonical in self._refs:
                    self._save()

    def drop_alias(self, canonical: str) -> None:
        with self._lock:
            stale = [n for n, c in self._aliases.items() if c == canonical]
            for name in stale:
                del self._aliases[name]
            if stale and canonical in self._refs:
                self._save()
