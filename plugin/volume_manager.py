"""What each VolumeDriver call does: one attach and one mount per volume however many
containers use it, counted per mount ID, serialised per volume."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import AbstractContextManager
from typing import Protocol

from dockvols_common.faults import fault_point
from dockvols_common.locks import NamedLocks
from dockvols_common.oplog import logged
from dockvols_common.sizes import size_text
from dockvols_common.wire import VOLUME_IN_USE, VOLUME_NOT_FOUND

from .blockdev import BlockDevices
from .devices import DeviceFinder
from .errors import PluginError, RecoveryPending, ServiceError, ServiceUnreachable, VolumeInUse
from .esx_client import EsxClient
from .filesystem import Mounter
from .refcounts import RefCounts, recovered_ids
from .volume_cache import VolumeCache
from .volume_names import VolumeNames

log = logging.getLogger("dockvols.plugin")
MB = 1024 * 1024
# A filesystem this much smaller than its device is grown at mount (mkfs leaves less).
GROW_SLACK_BYTES = MB
# How long a guest's resize request waits for its device to show the new size.
RESCAN_WAIT = 10.0


class LiveUsers(Protocol):
    """Which live containers use which volumes, as the Docker engine says (recovery.py)."""

    def by_volume(self) -> dict[str, set[str]]: ...

    def users_of(self, canonical: str) -> set[str]: ...


def status_of(view: dict) -> dict:
    """The ``Status`` map ``docker volume inspect`` shows."""
    attached = view.get("attached_to")
    capacity = {"size": size_text(view.get("capacity_mb")),
                "allocated": size_text(view.get("allocated_mb"))}
    if view.get("resize_to"):
        capacity["growing to"] = size_text(view["resize_to"])
    status = {
        "datastore": view.get("datastore"),
        "vmgroup": view.get("vmgroup"),
        "capacity": capacity,
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
                 refs: RefCounts, cache: VolumeCache, mount_root: str, blocks: BlockDevices,
                 query_timeout: float = 10.0, users: LiveUsers | None = None,
                 names: VolumeNames | None = None) -> None:
        self.client = client
        self.mounter = mounter
        self.devices = devices
        self.blocks = blocks
        # Per mounted volume: the device size its filesystem was last grown (or found) at,
        # and the filesystem type it is mounted with. In memory: after a restart, the first
        # check grows each mounted filesystem once, which is a no-op when nothing changed.
        self._grown: dict[str, int] = {}
        # Why the last grow at that size failed: a guest's resize that finds the periodic
        # check already tried (and failed) at this size says so, not "already fills".
        self._grow_failed: dict[str, str] = {}
        self._fstypes: dict[str, str] = {}
        self.refs = refs
        self.cache = cache
        self.mount_root = mount_root
        self.query_timeout = query_timeout
        # Answers Unmount for IDs nobody counted once recovery is done; None when the
        # plugin does not recover from Docker (DOCKVOLS_RECOVER=0).
        self.users = users
        self.names = names or VolumeNames(client, refs, cache)
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
        return self.names.canonical(name)

    # -- for recovery and reconcile: the local truth, settled one volume at a time ------
    def holding(self, canonical: str) -> AbstractContextManager[None]:
        """The volume's lock, the one every VolumeDriver call on it takes."""
        return self.locks.hold(canonical)

    def counts(self) -> dict[str, dict[str, int]]:
        """Every counted volume's mount IDs (a snapshot)."""
        return {volume: self.refs.ids(volume) for volume in self.refs.volumes()}

    def ids(self, canonical: str) -> dict[str, int]:
        return self.refs.ids(canonical)

    def is_mounted(self, canonical: str) -> bool:
        """Whether the volume's filesystem is mounted at its mount point now."""
        return self.mounter.is_mount_point(self.mountpoint(canonical))

    def mounted_volumes(self) -> set[str]:
        """Canonical names of the volumes mounted under the mount root now."""
        return {os.path.basename(p) for p in self.mounter.mounts_under(self.mount_root)}

    def attached_here(self, timeout: float | None = None) -> dict[str, dict]:
        """The service's view of each volume it says is attached to this VM, by name."""
        me = self.client.status(timeout=timeout)["vm"]
        return {v["name"]: v for v in self.client.list(timeout=timeout)
                if v.get("attached_to") == me}

    def attached_by_me(self, canonical: str) -> bool:
        """Whether this plugin attached the volume (refcounts.py): only such a disk is its to
        release when nobody uses it; another plugin on this VM may be mounting the rest."""
        return self.refs.attached_here(canonical)

    def device_here(self, canonical: str, view: dict) -> str | None:
        """The guest's block device of an attached volume (the service's ``view`` of it),
        without waiting for one to appear; None when this guest shows none."""
        return self.devices.find_now(view.get("attach_info") or {}, canonical)

    def device_in_use(self, device: str, probe: bool = False) -> bool:
        """Whether ``device`` is mounted anywhere in this mount table (not only under the
        mount root: another plugin's, an admin's mount); with ``probe``, also whether
        anything holds it exclusively, e.g. a mount in another mount namespace."""
        real = os.path.realpath(device)
        if any(os.path.realpath(source) == real
               for source in self.mounter.mounts_under("/").values()
               if source.startswith("/")):
            return True
        return probe and self.blocks.claimed(device)

    def touched_by_docker(self, canonical: str) -> bool:
        """True once dockerd's own Mount or Unmount of the volume ran in this process."""
        return canonical in self.touched

    def recount(self, canonical: str, containers: set[str]) -> bool:
        """Count the volume's users as one recovered ID per live container (their mount IDs
        are unknown after a restart); none clears its counts. True when that changed them."""
        kept = recovered_ids(containers)
        if self.refs.ids(canonical) == kept:
            return False
        self.refs.replace(canonical, kept)
        return True

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
                    # perhaps still attached here by an Unmount whose detach failed; one
                    # another plugin on this VM attached is its to release, not ours
                    if exc.code != VOLUME_IN_USE or not self.refs.attached_here(canonical):
                        raise
                    self.detach(name, canonical=canonical)
                    self.client.remove(name)
                self.refs.mark_detached(canonical)
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
            in_use = self.refs.in_use()
            result = []
            for name, view in sorted(views.items()):
                entry = {"Name": name}
                if view["name"] in in_use:
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
                if not self.mounter.is_mount_point(target):
                    self.attach_and_mount(name, canonical)
                    fault_point("plugin.mount.mounted")
                self.refs.add(canonical, mount_id)
                return target

    def attach_and_mount(self, name: str, canonical: str) -> None:
        """Attach, format on first use, mount; undo the attach if anything after it fails."""
        target = self.mountpoint(canonical)
        # Recorded before asking, so that a Mount dying while the service attaches still
        # leaves this plugin's recovery a disk to release (refcounts.py).
        self.refs.mark_attached(canonical)
        try:
            answer = self.client.attach(name)
        except ServiceError:
            self.refs.mark_detached(canonical)  # refused: nothing was attached for us
            raise
        view = answer["volume"]
        fault_point("plugin.mount.attached")
        try:
            device = self.devices.find(answer["attach"], canonical)
            fstype = view.get("fstype", "ext4")
            # Until a detach has reported a filesystem, probe before mkfs: a disk with data
            # is never formatted again. After that, the recorded fstype is the truth. A
            # blank disk (made by a create, attached for the first time) reads as zeros;
            # the service sees to it that no crash can call it blank again once we may
            # have written to it (VolumeService.attach).
            if view.get("formatted"):
                found: str | None = fstype
            elif answer.get("blank"):
                found = None
            else:
                found = self.mounter.filesystem_of(device)
            if found is None:
                log.info("volume=%s device=%s first use: mkfs.%s", canonical, device, fstype)
                self.mounter.mkfs(device, fstype, canonical.split("@", 1)[0])
            elif found != fstype:
                fstype = found  # the disk's own filesystem wins over what was asked
            read_only = view.get("access") == "read-only"
            # A disk grown while detached: its filesystem (read before mounting, when the
            # superblock on disk is the truth) is smaller than the device.
            grow_after = (found is not None and not read_only
                          and self._grow_unmounted(canonical, device, fstype))
            self.mounter.mount(device, target, fstype, read_only)
        except BaseException:
            self._detach_quietly(name, canonical)
            raise
        self._fstypes[canonical] = fstype
        self._grown.pop(canonical, None)
        self._grow_failed.pop(canonical, None)
        if read_only:
            return
        try:
            device_bytes = self.blocks.size(device)
        except PluginError as exc:  # never fail a Mount that worked: the check retries
            log.error("volume=%s: %s; its filesystem is not checked for growth", canonical, exc)
            return
        if grow_after:
            self._grow_filesystem(canonical, device, target, fstype, device_bytes)
        else:
            self._grown[canonical] = device_bytes

    def _grow_unmounted(self, canonical: str, device: str, fstype: str) -> bool:
        """Before the mount: grow a filesystem smaller than its device. ext4 is grown here,
        offline (no CAP_SYS_RESOURCE needed, nothing uses it yet); xfs grows only mounted,
        so True asks the caller to grow it after mounting (also ext4's fallback)."""
        fs_bytes = self.blocks.filesystem_size(device, fstype)
        try:
            device_bytes = self.blocks.size(device)
        except PluginError:
            return False
        if fs_bytes is not None and device_bytes - fs_bytes < GROW_SLACK_BYTES:
            return False
        log.info("volume=%s its disk grew while detached (%s mb filesystem on a %d mb device): "
                 "growing the filesystem", canonical,
                 "?" if fs_bytes is None else fs_bytes // MB, device_bytes // MB)
        if fstype != "ext4":
            return True
        fault_point("plugin.resize.growing")
        try:
            self.mounter.grow_unmounted(device, fstype)
        except PluginError as exc:
            log.error("volume=%s growing ext4 on %s before mounting failed: %s; trying once "
                      "mounted", canonical, device, exc)
            return True
        fault_point("plugin.resize.grown")
        return False

    def _grow_filesystem(self, canonical: str, device: str, target: str, fstype: str,
                         device_bytes: int) -> str | None:
        """Grow the mounted filesystem to its device; None when done, else why not. A
        failure is logged, not raised, and not retried at this size: the volume stays
        mounted at its old size, and the next mount (or a bigger resize) tries again."""
        fault_point("plugin.resize.growing")
        self._grown[canonical] = device_bytes
        try:
            self.mounter.grow(device, target, fstype)
        except PluginError as exc:
            log.error("volume=%s growing its %s filesystem on %s failed: %s", canonical, fstype,
                      device, exc)
            self._grow_failed[canonical] = exc.message
            return exc.message
        self._grow_failed.pop(canonical, None)
        fault_point("plugin.resize.grown")
        log.info("volume=%s %s filesystem grown online to %d mb (%s)", canonical, fstype,
                 device_bytes // MB, device)
        return None

    def grow_mounted(self, canonical: str, view: dict, wait: float = 0.0) -> str:
        """If the volume is mounted here and its disk (``view``'s capacity) is bigger than
        its device or filesystem last were: rescan the device, then grow the filesystem.
        The caller holds the volume's lock. Answers what was done, for people."""
        target = self.mountpoint(canonical)
        device = self.mounter.mounts_under(self.mount_root).get(target)
        if device is None:
            return "not mounted on this host"
        if view.get("access") == "read-only":
            return "mounted read-only here: its filesystem grows when mounted read-write"
        want = int(view.get("capacity_mb") or 0) * MB
        size = self.blocks.size(device)
        if size < want:
            self.blocks.rescan(device)
            fault_point("plugin.resize.rescanned")
            deadline = time.monotonic() + wait
            while (size := self.blocks.size(device)) < want and time.monotonic() < deadline:
                time.sleep(0.1)
            if size < want:
                log.warning("volume=%s device %s shows %d mb after a rescan, the disk is %d mb",
                            canonical, device, size // MB, want // MB)
        if size <= self._grown.get(canonical, 0):
            failed = self._grow_failed.get(canonical)
            if failed is not None:  # tried at this size (the periodic check came first)
                return (f"the disk grew but its filesystem did not: {failed}; it grows at the "
                        "next mount")
            return f"filesystem already fills its {size // MB} mb device"
        known = canonical in self._grown  # else: mounted before this plugin started
        fstype = self._fstypes.get(canonical) or view.get("fstype") or "ext4"
        failed = self._grow_filesystem(canonical, device, target, fstype, size)
        if failed is None and not known:
            return f"{fstype} filesystem made to fill its {size // MB} mb device, if it did not"
        if failed is None:
            return f"{fstype} filesystem grown online to fill its {size // MB} mb device"
        return f"the disk grew but its filesystem did not: {failed}; it grows at the next mount"

    def resize(self, name: str, size: str) -> dict:
        """A guest's request: grow the volume (the service checks and grows the disk), then,
        when it is mounted here, its filesystem at once."""
        with self._op("resize", name):
            reply = self.client.resize(name, size)
            view = reply["volume"]
            canonical = view["name"]
            self.refs.set_alias(name, canonical)
            self.cache.put(name, view)
            with self.locks.hold(canonical):
                note = self.grow_mounted(canonical, view, wait=RESCAN_WAIT)
            if note == "not mounted on this host":
                note = reply.get("filesystem") or note
            return {"Name": name, "Status": status_of(view),
                    "Previous": size_text(reply.get("previous_capacity_mb")), "Filesystem": note}

    def _detach_quietly(self, name: str, canonical: str) -> None:
        try:
            self.client.detach(name)
        except PluginError as exc:
            log.error("volume=%s detach after a failed mount failed too: %s", name, exc)
            return
        self.refs.mark_detached(canonical)

    def unmount(self, name: str, mount_id: str) -> None:
        with self._op("unmount", name, mount_id):
            canonical = self.canonical(name)
            with self.locks.hold(canonical):
                self.touched.add(canonical)
                # An ID nobody counted is a recovered user leaving (refcounts.py), else
                # ignored unless the volume is mounted for nobody Docker knows of.
                # The count is written once, with the detach's record (one write of the
                # state file less per Unmount, issue 15); until then a crash leaves the ID
                # counted, which recovery recounts from Docker as after any crash.
                if not self.refs.release(canonical, mount_id, save=False):
                    if not self._mounted_for_nobody(canonical):
                        log.warning("volume=%s unmount of unknown id %s ignored", name,
                                    mount_id[:12])
                        return
                try:
                    if self.refs.total(canonical):
                        return
                    try:
                        self.release_mount(canonical)
                    except PluginError:
                        self.refs.add(canonical, mount_id)  # still mounted: keep counting it
                        raise
                    # Unmounted now; a failed detach leaves the disk attached to this VM
                    # only, which the next Mount (attach is idempotent) or Remove takes
                    # care of.
                    self.detach(name, formatted=True, canonical=canonical)
                finally:
                    self.refs.flush()

    def _mounted_for_nobody(self, canonical: str) -> bool:
        """Counts lost (a state file set aside) but the volume is mounted: release it when
        Docker says no live container uses it."""
        return (self.refs.total(canonical) == 0 and self.users is not None
                and self.recovered.is_set()
                and self.is_mounted(canonical) and not self.users.users_of(canonical))

    def unmount_and_detach(self, name: str, canonical: str) -> None:
        self.release_mount(canonical)
        self.detach(name, formatted=True, canonical=canonical)

    def release_mount(self, canonical: str) -> None:
        """Unmount the volume's filesystem if it is mounted."""
        if self.is_mounted(canonical):
            self.mounter.umount(self.mountpoint(canonical))
            self._grown.pop(canonical, None)
            self._grow_failed.pop(canonical, None)
            fault_point("plugin.unmount.unmounted")

    def detach(self, name: str, formatted: bool = False, canonical: str | None = None) -> None:
        try:
            self.client.detach(name, formatted)
        except ServiceError as exc:
            if exc.code != VOLUME_NOT_FOUND:
                raise
        self.refs.mark_detached(canonical or name)
