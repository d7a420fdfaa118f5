"""The last answers esx_service gave for Get and List, so dockerd still sees every volume
while the service is unreachable (dockerd forgets volumes whose Get fails).

Persistence is best effort, the service stays the truth: changes are written together at
most every ``save_interval`` seconds, compact and without fsync, so a burst of creates among
thousands of volumes does not rewrite the file once per volume.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from dockvols_common.atomic import atomic_write_bytes

log = logging.getLogger("dockvols.plugin.cache")


class VolumeCache:
    def __init__(self, path: str, save_interval: float = 2.0) -> None:
        self._path = path
        self._interval = save_interval
        self._lock = threading.Lock()
        self._volumes: dict[str, dict] = {}
        self._pending: threading.Timer | None = None
        try:
            with open(path, encoding="utf-8") as f:
                self._volumes = dict(json.load(f))
        except (FileNotFoundError, ValueError, TypeError):
            pass

    def _changed(self) -> None:
        """Called with the lock held: schedule one write for this burst of changes."""
        if self._pending is None:
            self._pending = threading.Timer(self._interval, self.flush)
            self._pending.daemon = True
            self._pending.start()

    def flush(self) -> None:
        with self._lock:
            self._pending = None
            data = json.dumps(self._volumes, separators=(",", ":")).encode()
        try:
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
            atomic_write_bytes(self._path, data, durable=False)
        except OSError as exc:
            log.warning("cannot save the volume cache %s: %s", self._path, exc)

    def put(self, name: str, view: dict) -> None:
        with self._lock:
            if self._volumes.get(name) != view:
                self._volumes[name] = view
                self._changed()

    def replace_all(self, views: dict[str, dict]) -> None:
        with self._lock:
            if views != self._volumes:
                self._volumes = dict(views)
                self._changed()

    def get(self, name: str) -> dict | None:
        with self._lock:
            return self._volumes.get(name)

    def all(self) -> dict[str, dict]:
        with self._lock:
            return dict(self._volumes)

    def forget(self, name: str) -> None:
        with self._lock:
            stale = [k for k, v in self._volumes.items() if k == name or v.get("name") == name]
            for key in stale:
                del self._volumes[key]
            if stale:
                self._changed()
