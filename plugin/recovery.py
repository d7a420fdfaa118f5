"""Rebuild mount state after a plugin restart from the Docker engine and the mount table.

Mounted but used by no container: unmount and detach. Used but not mounted: mount. Counts
are replaced by one ``recovered:<container>`` reference per live user (refcounts.py).
Recovery works through the VolumeManager's public methods; the manager is handed the same
``DockerUsers`` at construction and consults it once recovery is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import DockerUnreachable, PluginError, ServiceUnreachable
from .reconcile import Reconciler
from .volume_manager import LiveUsers, VolumeManager

log = logging.getLogger("dockvols.recovery")
LIVE_STATES = ("running", "paused", "restarting")


def _unreachable() -> tuple[type[BaseException], ...]:
    """What the docker SDK raises when the engine cannot be reached: requests' connection
    errors and timeouts (OSError subclasses) and DockerException (e.g. "Error while fetching
    server API version" while dockerd starts). Imported when needed: the SDK is only used
    here."""
    from docker.errors import DockerException

    return (OSError, DockerException)


class DockerUsers:
    """Which running containers use which volumes of this driver (docker SDK)."""

    def __init__(self, docker_host: str, driver_name: str,
                 canonical: Callable[[str], str]) -> None:
        self.docker_host = docker_host
        self.driver_name = driver_name
        self._canonical = canonical  # Docker's volume name -> name@datastore
        self._client: Any = None

    def _docker(self) -> Any:
        if self._client is None:
            import docker  # the SDK is only needed here

            self._client = docker.DockerClient(base_url=self.docker_host, timeout=30)
        return self._client

    def _containers(self) -> list[dict]:
        try:
            return self._docker().api.containers(all=True)
        except _unreachable() as exc:
            raise DockerUnreachable(f"Docker at {self.docker_host} cannot be asked which "
                                    f"containers use volumes: {exc}") from exc

    def by_volume(self) -> dict[str, set[str]]:
        """Canonical volume name -> IDs of live containers that mount it."""
        users: dict[str, set[str]] = {}
        for container in self._containers():
            if container.get("State") not in LIVE_STATES:
                continue
            for mount in container.get("Mounts") or []:
                driver = (mount.get("Driver") or "").split(":")[0]
                if mount.get("Type") != "volume" or driver.split("/")[-1] != self.driver_name:
                    continue
                try:
                    canonical = self._canonical(mount["Name"])
                except PluginError as exc:
                    log.warning("container %s uses %s which cannot be resolved: %s",
                                container["Id"][:12], mount["Name"], exc)
                    continue
                users.setdefault(canonical, set()).add(container["Id"])
        return users

    def users_of(self, canonical: str) -> set[str]:
        return self.by_volume().get(canonical, set())


def recover(manager: VolumeManager, docker_users: LiveUsers) -> dict:
    # dockerd may Mount while recovery runs (the socket answers at once): a volume whose
    # counts moved since this snapshot belongs to a live container Docker had not shown yet.
    counts_before = manager.counts()
    users = docker_users.by_volume()
    mounted = manager.mounted_volumes()
    # Disks this plugin attached to this VM by a Mount that died before mounting, or left by
    # an Unmount that died before detaching: no container needs them.
    attached = set(manager.attached_here())
    report = {"unmounted": 0, "remounted": 0, "recounted": 0, "detached": 0}
    for canonical in sorted(mounted | attached | set(users) | set(counts_before)):
        with manager.holding(canonical):
            if manager.ids(canonical) != counts_before.get(canonical, {}):
                continue
            if manager.touched_by_docker(canonical):
                continue  # dockerd's own Mount/Unmount (even before the snapshot) settled it
            live = users.get(canonical, set())
            try:
                if not live:
                    manager.recount(canonical, set())
                    if canonical in mounted:
                        manager.unmount_and_detach(canonical, canonical)
                        report["unmounted"] += 1
                    elif canonical in attached and manager.attached_by_me(canonical):
                        # not one another plugin on this VM attached (refcounts.py)
                        manager.detach(canonical, canonical=canonical)
                        report["detached"] += 1
                    continue
                if canonical not in mounted:
                    manager.attach_and_mount(canonical, canonical)
                    report["remounted"] += 1
                # Mount IDs from before the restart cannot be tied to containers (Docker
                # does not show them), and Docker may still show a container "running"
                # whose Unmount failed against the dead plugin and will never come again.
                # So count containers, which the reconcile can see go away.
                if manager.recount(canonical, live):
                    report["recounted"] += 1
            except PluginError as exc:
                log.error("recovery of volume %s failed: %s", canonical, exc)
    return report


def start_recovery(manager: VolumeManager, docker_users: LiveUsers,
                   deadline: float = 300.0,
                   on_report: Callable[[str, dict[str, int]], None] | None = None,
                   reconcile_period: float | None = None, reconcile_grace: float = 120.0,
                   stop: threading.Event | None = None) -> threading.Thread:
    """Recover in the background (the socket must answer dockerd at once), retrying while
    Docker or esx_service are not up yet; then open the gate (Remove, and Unmount's question
    to Docker) and, with a period, reconcile for ever."""

    def run() -> None:
        stop_at = time.monotonic() + deadline
        delay = 0.5
        while True:
            try:
                started = time.monotonic()
                report = recover(manager, docker_users)
                log.info("recovery done in %.0f ms: %s", (time.monotonic() - started) * 1000,
                         report)
                if on_report is not None:  # the plugin's reconcile-actions metric
                    on_report("recovery", report)
                break
            except (DockerUnreachable, ServiceUnreachable) as exc:
                if time.monotonic() > stop_at:
                    log.error("recovery gave up after %.0fs: %s; serving with the "
                              "persisted counts", deadline, exc)
                    break
                log.info("recovery waiting for Docker/esx_service: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                # A bug, not a daemon still starting: say so with its traceback, and serve
                # with the persisted counts rather than refuse every Remove for ever.
                log.exception("recovery failed; serving with the persisted counts")
                break
        manager.recovered.set()
        if reconcile_period:
            Reconciler(manager, docker_users, reconcile_grace, on_report).run_forever(
                reconcile_period, stop or threading.Event())

    thread = threading.Thread(target=run, name="recovery", daemon=True)
    thread.start()
    return thread
