"""Admin routes for watching the service: ``metrics`` (Prometheus text), ``operations``
(running ones with progress, and the recent ones with outcome and error) and ``inventory``
(backend health, datastores with capacity and free space, quota use per vmgroup).

Served only on the root-only admin socket, like every admin route; the admin web page and
its ``/metrics`` (package ``admin_web``) read them from there.
"""

from __future__ import annotations

from collections.abc import Callable

from dockvols_common.metrics import CONTENT_TYPE

from ..api import Text
from ..backends.base import Backend
from ..errors import BadRequest
from ..telemetry import RECENT_OPS, Telemetry
from ..volumes import VolumeService
from .db import AdminDb
from .inventory import InventoryCollector, snapshot_view, take_snapshot

Reply = tuple[int, dict | Text]
Handler = Callable[[list[str], dict[str, str], bytes, str], Reply]


class ObserveRoutes:
    def __init__(self, volumes: VolumeService, backend: Backend, db: AdminDb,
                 telemetry: Telemetry) -> None:
        # volumes lists the datastores and metadata; backend names itself and sizes disks
        self.volumes, self.backend, self.db, self.telemetry = volumes, backend, db, telemetry
        telemetry.registry.add_collector(
            InventoryCollector(lambda: take_snapshot(volumes, backend, db)))

    def routes(self) -> list[tuple[str, tuple[str, ...], Handler]]:
        return [("GET", ("metrics",), self._metrics),
                ("GET", ("operations",), self._operations),
                ("GET", ("inventory",), self._inventory)]

    def _metrics(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, Text(self.telemetry.registry.render(), CONTENT_TYPE)

    def _operations(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        raw = q.get("limit", str(RECENT_OPS))
        if not raw.isdigit() or not 1 <= int(raw) <= RECENT_OPS:
            raise BadRequest(f"limit must be a number from 1 to {RECENT_OPS}, got {raw!r}")
        return 200, {"running": self.telemetry.running(),
                     "recent": self.telemetry.recent(int(raw))}

    def _inventory(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        # allocation is per volume and the page gets it from GET volumes already
        return 200, snapshot_view(take_snapshot(self.volumes, self.backend, self.db,
                                                   allocation=False))
