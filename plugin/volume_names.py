"""Docker's name for a volume (``db``, ``db@ds1``) to its canonical ``name@datastore``: asked
of esx_service once, then remembered with the mount counts (names never move)."""

from __future__ import annotations

from .esx_client import EsxClient
from .refcounts import RefCounts
from .volume_cache import VolumeCache


class VolumeNames:
    def __init__(self, client: EsxClient, refs: RefCounts, cache: VolumeCache) -> None:
        self._client = client
        self._refs = refs
        self._cache = cache

    def canonical(self, name: str) -> str:
        known = self._refs.alias(name)
        if known:
            return known
        view = self._client.get(name)
        self._refs.set_alias(name, view["name"])
        self._cache.put(name, view)
        return view["name"]
