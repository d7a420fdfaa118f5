"""What a listing hands out per volume, computed once per metadata version: List of
thousands of volumes must not turn thousands of dicts into VolumeMeta, views and JSON again
on every call (issue 15).

Keyed by the identity of the metadata dict the backend returned: the local backend returns
the same dict object while the file is provably unchanged (esx_service/file_cache.py) and a
new one for every new version, so an entry can never describe other metadata than its own.
A backend that builds new dicts on every listing (vsphere) simply parses again. Each
datastore's entries are replaced by those of its latest listing, so none outlive their
volume.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .metadata import VolumeMeta


@dataclass
class Listed:
    data: dict  # held, so that its id cannot be reused while this entry lives
    meta: VolumeMeta
    _view: dict | None = field(default=None, repr=False)
    _json: str | None = field(default=None, repr=False)

    def view(self, make: Callable[[VolumeMeta], dict]) -> dict:
        if self._view is None:
            self._view = make(self.meta)
        return self._view

    def view_json(self, make: Callable[[VolumeMeta], dict]) -> str:
        if self._json is None:
            self._json = json.dumps(self.view(make))
        return self._json


class ListingMemo:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_datastore: dict[str, dict[int, Listed]] = {}

    def parse(self, datastore: str, listing: list[dict],
              parse: Callable[[dict], VolumeMeta | None]) -> list[Listed]:
        """One ``Listed`` per dict of ``listing`` that ``parse`` accepts, reusing those of
        the previous listing of ``datastore`` for the same dict objects."""
        with self._lock:
            before = self._by_datastore.get(datastore, {})
        now: dict[int, Listed] = {}
        for data in listing:
            entry = before.get(id(data))
            if entry is None or entry.data is not data:
                meta = parse(data)
                if meta is None:
                    continue
                entry = Listed(data, meta)
            now[id(data)] = entry
        with self._lock:
            self._by_datastore[datastore] = now
        return list(now.values())
