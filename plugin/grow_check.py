"""Notice disks grown behind the plugin's back (an admin's `dockvols-admin volume resize` of
a mounted volume) and grow their filesystems: dockerd never tells a plugin about a resize.

``check_grown`` is one pass, callable from any periodic reconcile; ``start_grow_checks``
runs it every ``interval`` seconds once recovery has finished. One Get per volume mounted
here per pass: a handful of small requests, never a List of every volume."""

from __future__ import annotations

import logging
import os
import threading

from .errors import PluginError
from .volume_manager import VolumeManager

log = logging.getLogger("dockvols.plugin.grow")


def check_grown(manager: VolumeManager) -> int:
    """Grow the filesystem of every volume mounted here whose disk grew; answers how many
    were grown. Errors are logged per volume: the next pass retries."""
    grown = 0
    for target in sorted(manager.mounter.mounts_under(manager.mount_root)):
        canonical = os.path.basename(target)
        try:
            view = manager.client.get(canonical, timeout=manager.query_timeout)
            with manager.locks.hold(canonical):
                if "grown online" in manager.grow_mounted(canonical, view):
                    grown += 1
        except PluginError as exc:
            log.warning("volume=%s growth check failed: %s", canonical, exc)
    return grown


def start_grow_checks(manager: VolumeManager, interval: float,
                      stop: threading.Event | None = None) -> threading.Thread:
    stop = stop or threading.Event()

    def run() -> None:
        manager.recovered.wait()
        while not stop.wait(interval):
            try:
                check_grown(manager)
            except Exception:  # a thread that dies stops noticing grown disks for good
                log.exception("growth check failed; retrying in %.0fs", interval)

    thread = threading.Thread(target=run, name="grow-check", daemon=True)
    thread.start()
    return thread
