"""Mount reference counts per volume, persisted so a plugin restart loses none.

A counter per (volume, mount ID), not a set: dockerd may Mount the same ID twice and then
Unmount it twice. ``recovered:<container>`` IDs stand for users found in the Docker engine
after a restart, whose real mount IDs are unknown.
"""

from __future__ import annotations

import json
import os
import threading

from esx_service.atomic import atomic_write_json

RECOVERED = "recovered:"


class RefCounts:
    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._refs: dict[str, dict[str, int]] = {}
        self._aliases: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            with open(self._path, encoding="utf-8") as f:
                data = json.load(f)
            refs = {str(v): {str(i): int(n) for i, n in ids.items() if int(n) > 0}
                    for v, ids in data.get("refs", {}).items()}
            aliases = {str(k): str(v) for k, v in data.get("aliases", {}).items()}
        except FileNotFoundError:
            return
        except (ValueError, TypeError, AttributeError):
            os.replace(self._path, self._path + ".corrupt")  # keep it for a post-mortem
            return
        self._refs = {v: ids for v, ids in refs.items() if ids}
        self._aliases = aliases

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        # Only names of volumes in use need to survive a restart (Unmount and Path of them
        # must work with the service down); keeping the rest out keeps every write small.
        aliases = {n: c for n, c in self._aliases.items() if c in self._refs}
        # Atomic (never half written) but not fsynced: the counts must outlive a plugin
        # restart, which the page cache does; a host crash takes every mount and loop device
        # with it, and recovery recounts from Docker then. Two fsyncs fewer per Mount and
        # per Unmount (issue 15, bench/phases.py).
        atomic_write_json(self._path, {"refs": self._refs, "aliases": aliases},
                          durable=False)

    def total(self, volume: str) -> int:
        with self._lock:
            return sum(self._refs.get(volume, {}).values())

    def ids(self, volume: str) -> dict[str, int]:
        with self._lock:
            return dict(self._refs.get(volume, {}))

    def volumes(self) -> list[str]:
        with self._lock:
            return sorted(self._refs)

    def add(self, volume: str, mount_id: str) -> int:
        with self._lock:
            ids = self._refs.setdefault(volume, {})
            ids[mount_id] = ids.get(mount_id, 0) + 1
            self._save()
            return sum(ids.values())

    def release(self, volume: str, mount_id: str) -> bool:
        """Drop one reference; False if that ID held none."""
        with self._lock:
            ids = self._refs.get(volume, {})
            if ids.get(mount_id, 0) <= 0:
                return False
            ids[mount_id] -= 1
            if ids[mount_id] == 0:
                del ids[mount_id]
            if not ids:
                self._refs.pop(volume, None)
            self._save()
            return True

    def replace(self, volume: str, ids: dict[str, int]) -> None:
        with self._lock:
            if ids:
                self._refs[volume] = dict(ids)
            else:
                self._refs.pop(volume, None)
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
