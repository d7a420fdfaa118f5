"""The periodic reconcile: compare what this VM has mounted and attached with what Docker
says is live, and release what nobody uses.

Recovery (recovery.py) rebuilds the counts once at start; this runs every ``period`` seconds
after it, for the leaks a running plugin can still get: a recovered container that went
away, counts lost with the state file, an Unmount that failed half-way, and a disk the
service attached late, after a Mount whose plugin died (the new plugin's recovery ran before
the attach finished), and, after a grace, a disk attached to this VM that nobody here
claims (the attach record lost with the state file, or its plugin gone).

Decisions are taken under the volume's lock from the local truth (mount table, counts);
Docker's and the service's snapshots, taken before, only ever *permit* a release when the
local truth also says unused, so a Mount running meanwhile is never undone. One method per
kind of action, each a small rule, so another (e.g. noticing a grown disk) fits beside them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DockerUnreachable, PluginError, ServiceUnreachable
from .volume_manager import LiveUsers, VolumeManager

log = logging.getLogger("dockvols.reconcile")


@dataclass
class Snapshot:
    """What one pass knows before taking any volume lock."""

    users: dict[str, set[str]]  # canonical volume -> live container IDs (Docker)
    mounted: set[str]  # canonical volumes mounted under the mount root
    attached: set[str]  # canonical volumes the service says are attached to this VM
    views: dict[str, dict] = field(default_factory=dict)  # the service's view of those
    report: dict[str, int] = field(default_factory=dict)

    def count(self, action: str) -> None:
        self.report[action] = self.report.get(action, 0) + 1


class Reconciler:
    def __init__(self, manager: VolumeManager, docker: LiveUsers, grace: float = 120.0,
                 on_report: Callable[[str, dict[str, int]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.docker = docker
        self.on_report = on_report  # the plugin's reconcile-actions metric
        self._unbacked: set[str] = set()  # volumes a pass found counted but with no live user
        # A mount ID counted less than this long ago is kept even when Docker shows no live
        # user: `docker create`/`docker cp` mount for containers that are not running, and a
        # starting container is "created" until its Mounts returned.
        # It is also how long a disk attached to this VM that nobody here claims (not in
        # this plugin's attach record, uncounted, unmounted) must stay so, seen in every
        # pass, before it is released: the record is lost with the state file (_abandoned).
        self.grace = grace
        self.clock = clock
        self._unclaimed: dict[str, float] = {}  # such a disk -> when a pass first saw it

    # -- one pass -------------------------------------------------------------------------
    def run_once(self) -> dict[str, int]:
        snap = self._snapshot()
        m = self.manager
        for canonical in sorted(snap.mounted | snap.attached | set(m.refs.volumes())):
            with m.holding(canonical):
                try:
                    self._settle(canonical, snap)
                except PluginError as exc:
                    log.error("reconcile of volume %s failed: %s", canonical, exc)
                    snap.count("failed")
        # seen unclaimed in every pass, or its wait starts again
        for canonical in set(self._unclaimed) - snap.attached:
            del self._unclaimed[canonical]
        log.debug("reconcile pass over %d volumes done", len(snap.mounted | snap.attached))
        if any(snap.report.values()):
            log.info("reconcile: %s", snap.report)
            if self.on_report is not None:
                self.on_report("reconcile", snap.report)
        return snap.report

    def _snapshot(self) -> Snapshot:
        m = self.manager
        users = self.docker.by_volume()  # raises when Docker is down: skip the pass
        mounted = m.mounted_volumes()
        try:
            # the query timeout: a stuck service must not make each pass hold a connection
            views = m.attached_here(timeout=m.query_timeout)
        except PluginError as exc:
            log.warning("reconcile: service unreachable, only mounts are checked: %s", exc)
            views = {}
        return Snapshot(users, mounted, set(views), views)

    def _settle(self, canonical: str, snap: Snapshot) -> None:
        live = snap.users.get(canonical, set())
        self._forget_gone_recovered(canonical, live, snap)
        self._recount_lost(canonical, live, snap)
        self._drop_stale_ids(canonical, live, snap)
        self._release_unused(canonical, live, snap)
        self._detach_orphan(canonical, live, snap)
        self._release_abandoned(canonical, live, snap)
        self._grow_grown(canonical, live, snap)

    # -- the rules ------------------------------------------------------------------------
    def _grow_grown(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """A disk grown behind the plugin's back (an admin's resize): grow the mounted
        filesystem. grow_check.py does the same every few seconds, for the 10 s bound; this
        rule covers a plugin whose check is off (DOCKVOLS_GROW_CHECK_INTERVAL=0)."""
        view = snap.views.get(canonical)
        if view is not None and self.manager.is_mounted(canonical) and \
                "grown online" in self.manager.grow_mounted(canonical, view):
            snap.count("grown")

    def _forget_gone_recovered(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Recovered users Docker no longer shows live have stopped."""
        gone = self.manager.refs.recovered_users(canonical) - live
        if gone and self.manager.refs.forget_recovered(canonical, gone):
            snap.count("forgotten")

    def _recount_lost(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Mounted with no count but live users: counts were lost; count Docker's users."""
        if live and self.manager.refs.total(canonical) == 0 and self.manager.is_mounted(canonical):
            self.manager.recount(canonical, live)
            snap.count("recounted")

    def _drop_stale_ids(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Mount IDs no live container backs: an Unmount that failed half-way, or one that
        reached no plugin. Docker will not send it again. An ID this plugin counted is
        dropped after the grace (docker create/cp mount for containers that are not
        running); one a previous plugin counted, once a second pass still finds nobody
        (a container whose Mount came just before the restart is running by then)."""
        refs = self.manager.refs
        if live or not refs.total(canonical):
            self._unbacked.discard(canonical)
            return
        old, loaded = refs.unbacked_ids(canonical, self.grace)
        stale = old + (loaded if canonical in self._unbacked else [])
        self._unbacked.add(canonical)
        if stale:
            log.warning("volume=%s mount IDs %s have no live container: dropped", canonical,
                        ", ".join(i[:12] for i in stale))
            refs.drop(canonical, stale)
            snap.count("dropped")

    def _release_unused(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Mounted for nobody: unmount and detach."""
        m = self.manager
        if not live and m.refs.total(canonical) == 0 and m.is_mounted(canonical):
            m.unmount_and_detach(canonical, canonical)
            snap.attached.discard(canonical)
            snap.count("unmounted")

    def _detach_orphan(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Attached to this VM by this plugin, not mounted, nobody counted: a Mount died
        after asking for the attach (perhaps finished by the service after our recovery),
        or an Unmount died before its detach. A disk another plugin on this VM attached is
        left alone: that plugin may be between its attach and its mount right now."""
        refs = self.manager.refs
        if (canonical in snap.attached and not live and refs.total(canonical) == 0
                and self.manager.attached_by_me(canonical)
                and not self.manager.is_mounted(canonical)):
            self.manager.detach(canonical, formatted=False)
            snap.count("detached")

    def _release_abandoned(self, canonical: str, live: set[str], snap: Snapshot) -> None:
        """Attached to this VM, yet not in this plugin's attach record, uncounted, used by no
        live container and its device mounted nowhere in this mount table: another plugin on
        this VM may be between its attach and its mount, so wait. Still so in every pass for
        the grace, it is abandoned: this plugin's record was lost (its state file is not
        fsynced and an unreadable one starts empty; after a guest crash on vSphere the disk
        stays attached) or its plugin is gone. Released after a last check that nothing,
        in any mount namespace, holds its device. Else it stayed attached for ever and no
        other VM could use it."""
        m = self.manager
        view = snap.views.get(canonical)
        first = self._unclaimed.pop(canonical, None)
        if (view is None or canonical not in snap.attached or live or m.refs.total(canonical)
                or m.attached_by_me(canonical) or m.is_mounted(canonical)):
            return
        device = m.device_here(canonical, view)
        if device is not None and m.device_in_use(device):
            return
        now = self.clock()
        if first is None or now - first < self.grace:
            self._unclaimed[canonical] = now if first is None else first
            return
        if device is not None and m.device_in_use(device, probe=True):
            log.debug("volume=%s device %s is held (a mount in another namespace?): kept",
                      canonical, device)
            self._unclaimed[canonical] = first
            return
        log.info("volume=%s attached to this VM for %.0f s with no attach record of this "
                 "plugin, no count, no live container and %s: released as abandoned (its "
                 "plugin's state file lost, or its plugin gone)", canonical, now - first,
                 f"{device} in use nowhere" if device else "no device in this guest")
        self._unclaimed[canonical] = first  # a failed detach is tried again next pass
        m.detach(canonical, formatted=False)
        del self._unclaimed[canonical]
        snap.attached.discard(canonical)
        snap.count("abandoned")

    # -- the loop -------------------------------------------------------------------------
    def run_forever(self, period: float, stop: threading.Event) -> None:
        while not stop.wait(period):
            try:
                self.run_once()
            except (DockerUnreachable, ServiceUnreachable) as exc:  # try again next period
                log.warning("reconcile pass skipped: %s", exc)
            except Exception:
                # A bug, not a daemon that is down: say so with its traceback; the next
                # period tries again (the plugin serves on without its reconcile otherwise).
                log.exception("reconcile pass failed")
