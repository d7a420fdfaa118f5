"""The last answers esx_service gave for Get and List, so dockerd still sees every volume
while the service is unreachable (dockerd forgets volumes whose Get fails)."""

from __future__ import annotations

import json
import os
import threading
import time

from esx_service.atomic import atomic_write_json

_SAVE_INTERVAL = 2.0  # seconds: persistence is best effort, the service stays the truth


class VolumeCache:
    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._volumes: dict[str, dict] = {}
        self._saved_at = 0.0
        try:
            with open(path, encoding="utf-8") as f:
                self._volumes = dict(json.load(f))
        except (FileNotFoundError, ValueError, TypeError):
            pass

    def _maybe_save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at > _SAVE_INTERVAL:
            self._saved_at = now
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
            atomic_write_json(self._path, self._volumes, durable=False)

    def put(self, name: str, view: dict) -> None:
        with self._lock:
            previous = self._volumes.get(name)
            if previous != view:
                self._volumes[name] = view
                self._maybe_save(force=previous is None)

    def replace_all(self, views: dict[str, dict]) -> None:
        with self._lock:
            if views != self._volumes:
                self._volumes = dict(views)
                self._maybe_save()

    def get(self, name: str) -> dict | None:
        with self._lock:
            return self._volumes.get(name)

    def all(self) -> dict[str, dict]:
        with self._lock:
            return dict(self._volumes)

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [k for k, v in self._volumes.items() if k == name or v.get("name") == name]:
                del self._volumes[key]
            self._maybe_save(force=True)
