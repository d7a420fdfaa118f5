"""What each VolumeDriver call does: one attach and one mount per volume however many
containers use it, counted per mount ID, serialised per volume."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from esx_service.faults import fault_point
from esx_service.locks import NamedLocks
from esx_service.oplog import logged

from .devices import DeviceFinder
from .errors import PluginError, RecoveryPending, ServiceError, ServiceUnreachable, VolumeInUse
from .esx_client import EsxClient
from .filesystem import Mounter
from .refcounts import RECOVERED, RefCounts
from .volume_cache import VolumeCache

log = logging.getLogger("dockvols.plugin")

# Answers Unmount for IDs nobody counted: which containers use a volume now (from Docker).
UsersOf = Callable[[str], set[str]]


def status_of(view: dict) -> dict:
    """The ``Status`` map ``docker volume inspect`` shows."""
    attached = view.get("attached_to")
    status = {
        "datastore": view.get("datastore"),
        "vmgroup": view.get("vmgroup"),
        "capacity": {"size": f"{view.get('capacity_mb')}mb",
                     "allocated": f"{view.get('allocated_mb', '?')}mb"},
        "diskformat": view.get("diskformat"),
        "fstype": view.get("fstype"),
        "access": view.get("access"),
        "attach-as": view.get("attach_as"),
        "created": view.get("created_at"),
        "created by VM": view.get("created_by"),
        "attached to VM": attached or "detached",
    }
    for key, wire in (("clone-from", "clone_from"), ("vsan-policy-name", "vsan_policy_name")):
        if view.get(wire):
            status[key] = view[wire]
    if view.get("stale"):
        status["stale"] = view["stale"]
    return status


class VolumeManager:
    def __init__(self, client: EsxClient, mounter: Mounter, devices: DeviceFinder,
                 refs: RefCounts, cache: VolumeCache, mount_root: str,
                 query_timeout: float = 10.0) -> None:
        self.client = client
        self.mounter = mounter
        self.devices = devices
        self.refs = refs
        self.cache = cache
        self.mount_root = mount_root
        self.query_timeout = query_timeout
        self.users_of: UsersOf | None = None
        self.recovered = threading.Event()
        self.locks = NamedLocks()
        # Volumes a Mount or Unmount from dockerd has handled since this process started:
        # their counts and mount are what dockerd just said, so recovery, which works from
        # a snapshot taken before, must leave them alone (it raced with a fast Mount).
        self.touched: set[str] = set()

    # -- helpers ----------------------------------------------------------------------
    def mountpoint(self, canonical: str) -> str:
        return os.path.join(self.mount_root, canonical)

    def _op(self, op: str, name: str,
            mount_id: str = "-") -> AbstractContextManager[None]:
        return logged(log, PluginError, "op=%s volume=%s id=%s", op, name, mount_id[:12])

    def canonical(self, name: str) -> str:
        """``name@datastore`` for a name as docker gave it (cached: names never move)."""
        known = self.refs.alias(name)
        if known:
            return known
        view = self.client.get(name)
        self.refs.set_alias(name, view["name"])
        self.cache.put(name, view)
        return view["name"]

    # -- VolumeDriver calls ------------------------------------------------------------
    def create(self, name: str, opts: dict | None) -> None:
        with self._op("create", name):
            view = self.client.create(name, opts or {})
            self.refs.set_alias(name, view["name"])
            self.cache.put(name, view)

    def remove(self, name: str) -> None:
        with self._op("remove", name):
            if not self.recovered.is_set():
                raise RecoveryPending(f"cannot remove {name} yet: the plugin is still "
                                      "recovering mount state after a restart; retry shortly")
            canonical = self.canonical(name)
            with self.locks.hold(canonical):
                users = self.refs.total(canonical)
                if users:
                    raise VolumeInUse(f"volume {name} is in use by {users} mount(s) on this "
                                      "host; stop the containers using it first")
                try:
                    self.client.remove(name)
                except ServiceError as exc:
                    if exc.code != "VolumeInUse":
                        raise
                    # perhaps still attached here by an Unmount whose detach failed
                    self.detach(name)
                    self.client.remove(name)
                self.refs.drop_alias(canonical)
                self.cache.forget(canonical)

    def get(self, name: str) -> dict:
        with self._op("get", name):
            try:
                view = self.client.get(name, timeout=self.query_timeout)
            except ServiceUnreachable as exc:
                cached = self.cache.get(name)
                if cached is None:
                    raise
                view = {**cached, "stale": f"cached answer; {exc.message}"}
            else:
                self.refs.set_alias(name, view["name"])
                self.cache.put(name, view)
            canonical = view["name"]
            answer = {"Name": name, "Status": status_of(view)}
            if self.refs.total(canonical):
                answer["Mountpoint"] = self.mountpoint(canonical)
            if view.get("created_at"):
                answer["CreatedAt"] = view["created_at"]
            return answer

    def list(self) -> list[dict]:
        with self._op("list", "-"):
            try:
                views = {v.get("docker_name") or v["name"]: v
                         for v in self.client.list(timeout=self.query_timeout)}
                self.cache.replace_all(views)
            except ServiceUnreachable:
                log.warning("esx_service unreachable: answering List from the cache")
                views = self.cache.all()
            result = []
            for name, view in sorted(views.items()):
                entry = {"Name": name}
                if self.refs.total(view["name"]):
                    entry["Mountpoint"] = self.mountpoint(view["name"])
                result.append(entry)
            return result

    def path(self, name: str) -> str:
        canonical = self.refs.alias(name)
        if canonical and self.refs.total(canonical):
            return self.mountpoint(canonical)
        return ""

    def mount(self, name: str, mount_id: str) -> str:
        with self._op("mount", name, mount_id):
            canonical = self.canonical(name)
            with self.locks.hold(canonical):
                self.touched.add(canonical)
                target = self.mountpoint(canonical)
                if target not in self.mounter.mounts_under(self.mount_root):
                    self.attach_and_mount(name, canonical)
                    fault_point("plugin.mount.mounted")
                self.refs.add(canonical, mount_id)
                return target

    def attach_and_mount(self, name: str, canonical: str) -> None:
        """Attach, format on first use, mount; undo the attach if anything after it fails."""
        target = self.mountpoint(canonical)
        answer = self.client.attach(name)
        view = answer["volume"]
        fault_point("plugin.mount.attached")
        try:
            device = self.devices.find(answer["attach"], canonical)
            fstype = view.get("fstype", "ext4")
            # Until a detach has reported a filesystem, probe before mkfs: a disk with data
            # is never formatted again. After that, the recorded fstype is the truth.
            found = fstype if view.get("formatted") else self.mounter.filesystem_of(device)
            if found is None:
                log.info("volume=%s device=%s first use: mkfs.%s", canonical, device, fstype)
                self.mounter.mkfs(device, fstype, canonical.split("@", 1)[0])
            elif found != fstype:
                fstype = found  # the disk's own filesystem wins over what was asked
            self.mounter.mount(device, target, fstype, view.get("access") == "read-only")
        except BaseException:
            self._detach_quietly(name)
            raise

    def _detach_quietly(self, name: str) -> None:
        try:
            self.client.detach(name)
        except PluginError as exc:
            log.error("volume=%s detach after a failed mount failed too: %s", name, exc)

    def unmount(self, name: str, mount_id: str) -> None:
        with self._op("unmount", name, mount_id):
            canonical = self.canonical(name)
            with self.locks.hold(canonical):
                self.touched.add(canonical)
                if not self.refs.release(canonical, mount_id):
                    if not (self._reconcile_recovered(canonical)
                            or self._mounted_for_nobody(canonical)):
                        log.warning("volume=%s unmount of unknown id %s ignored", name,
                                    mount_id[:12])
                        return
                if self.refs.total(canonical):
                    return
                try:
                    self.release_mount(canonical)
                except PluginError:
                    self.refs.add(canonical, mount_id)  # still mounted: keep counting it
                    raise
                # Unmounted now; a failed detach leaves the disk attached to this VM only,
                # which the next Mount (attach is idempotent) or Remove takes care of.
                self.detach(name, formatted=True)

    def _reconcile_recovered(self, canonical: str) -> bool:
        """An unknown ID after a restart: recount the volume's users from Docker."""
        ids = self.refs.ids(canonical)
        if not any(i.startswith(RECOVERED) for i in ids) or self.users_of is None:
            return False
        users = self.users_of(canonical)
        kept = {i: n for i, n in ids.items() if not i.startswith(RECOVERED)}
        kept.update({f"{RECOVERED}{c}": 1 for c in users})
        self.refs.replace(canonical, kept)
        return True

    def _mounted_for_nobody(self, canonical: str) -> bool:
        """Counts lost (a state file set aside) but the volume is mounted: release it when
        Docker says no live container uses it."""
        return (self.refs.total(canonical) == 0 and self.users_of is not None
                and self.mountpoint(canonical) in self.mounter.mounts_under(self.mount_root)
                and not self.users_of(canonical))

    def unmount_and_detach(self, name: str, canonical: str) -> None:
        self.release_mount(canonical)
        self.detach(name, formatted=True)

    def release_mount(self, canonical: str) -> None:
        """Unmount the volume's filesystem if it is mounted."""
        target = self.mountpoint(canonical)
        if target in self.mounter.mounts_under(self.mount_root):
            self.mounter.umount(target)
            fault_point("plugin.unmount.unmounted")

    def detach(self, name: str, formatted: bool = False) -> None:
        try:
            self.client.detach(name, formatted)
        except ServiceError as exc:
            if exc.code != "VolumeNotFound":
                raise
