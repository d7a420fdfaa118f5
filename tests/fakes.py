"""In-memory stand-ins for the system's external boundaries, shared by the unit tests.

- ``FakeBackend``: esx_service's Backend protocol in memory (datastores, disks, metadata,
  attachments), with failure injection per method.
- ``FakeStoragePolicies``: the StoragePolicyService (VSAN policies, PBM on vsphere) in
  memory, for admin tests on the local backend, which has none.
- ``FakeLosetup``: a command runner that plays losetup for the real LocalBackend.
- ``FakeEsxClient``: the plugin's EsxClient backed by a real ``VolumeService`` through the
  real ``Api`` in-process: the same routes, JSON and error codes as over the socket.
- ``FakeMounter``, ``FakeDeviceFinder``, ``FakeDockerUsers``: the guest's mkfs/mount, device
  discovery and the Docker engine's view of who uses which volume.
- ``one_shot_unix_server``: a unix socket that answers one request with given raw bytes (or
  not at all), for clients facing answers no real service gives.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
import time
from collections import Counter

from esx_service.api import Api, Text
from esx_service.backends.base import (
    DatastoreInfo,
    DiskLocation,
    Fence,
    FileTimes,
    RecordWrite,
    attach_then_record,
    detach_then_record,
)
from esx_service.errors import (
    BackendError,
    BadRequest,
    DiskExists,
    InsufficientSpace,
    InvalidOption,
    UnknownDatastore,
)
from esx_service.options import MB
from esx_service.vmdk import new_disk_uuid
from esx_service.volumes import VolumeService
from plugin.errors import (
    DeviceError,
    DockerUnreachable,
    FilesystemError,
    ServiceError,
    ServiceUnreachable,
)
from plugin.esx_client import HttpEsxClient

GB = 1024 * MB


def _key(loc: DiskLocation) -> tuple[str, str, str]:
    return (loc.datastore, loc.vmgroup, loc.name)


# A mountinfo table with what the readers must get right: escapes, optional fields, a line
# without the separator.
MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /proc rw,nosuid - proc proc rw
61 22 7:3 / /mnt/vmdk/db@ds1 rw,relatime shared:30 - ext4 /dev/loop3 rw
62 22 7:4 / /mnt/vmdk/with\040space@ds1 rw,relatime - xfs /dev/loop4 rw,attr2
63 22 7:5 / /mnt/vmdk/tab\011and\012newline\134back ro - ext4 /dev/loop5 ro
64 22 7:6 / /mnt/vmdk2/not-ours rw - ext4 /dev/loop6 rw
65 22 0:40 /sub /mnt/bind\040src rw master:2 other:3 - ext4 /dev/dm\0400 rw
garbage line without separator
"""


class FakeClock:
    """A monotonic clock that moves only when a test sets ``now`` (lease expiry and waits)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

class FakeBackend:
    """The Backend protocol in memory. ``fail_before[method] = exc`` raises before the
    method does anything, ``fail_after[method] = exc`` after it did its work (a task that
    completed but whose answer was lost). Each injected failure fires once."""

    name = "fake"
    storage_policies = None  # no VSAN: the admin's storage-policy commands are refused

    def __init__(self, datastores: dict[str, int] | None = None) -> None:
        # datastore name -> free bytes
        self.free = dict(datastores or {"ds1": 100 * GB, "ds2": 50 * GB})
        self.metadata: dict[tuple[str, str, str], dict] = {}
        self.parked: dict[tuple[str, str], dict] = {}  # (staging, name) -> a parked record
        self.disks: dict[tuple[str, str, str], dict] = {}
        # when each record was last written, by this machine's clock (file_times)
        self.record_times: dict[tuple[str, str, str], float] = {}
        self.attached: dict[tuple[str, str, str], tuple[str, dict]] = {}
        self.powered_off: set[str] = set()
        self.fail_before: dict[str, BaseException] = {}
        self.fail_after: dict[str, BaseException] = {}
        self.calls: Counter[str] = Counter()
        self.grown: list[tuple[str, int, dict | None]] = []  # (volume, size_mb, attach_info)
        self._next_disk = 0

    # -- helpers for tests ------------------------------------------------------------
    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        exc = self.fail_before.pop(method, None)
        if exc is not None:
            raise exc

    def _leave(self, method: str) -> None:
        exc = self.fail_after.pop(method, None)
        if exc is not None:
            raise exc

    def _check_ds(self, datastore: str) -> None:
        if datastore not in self.free:
            raise UnknownDatastore(f"unknown datastore {datastore!r}")

    # -- datastores -------------------------------------------------------------------
    def datastores(self) -> list[DatastoreInfo]:
        return [DatastoreInfo(name=n, type="fake", capacity_bytes=free * 2, free_bytes=free,
                              url=f"fake://{n}") for n, free in self.free.items()]

    def default_datastore(self, vm: str) -> str | None:
        return None

    # -- metadata ---------------------------------------------------------------------
    def list_metadata(self, datastore: str) -> list[dict]:
        self._enter("list_metadata")
        return [copy.deepcopy(v) for k, v in sorted(self.metadata.items()) if k[0] == datastore]

    def read_metadata(self, loc: DiskLocation) -> dict | None:
        self._enter("read_metadata")
        data = self.metadata.get(_key(loc))
        return copy.deepcopy(data) if data is not None else None

    def write_metadata(self, loc: DiskLocation, data: dict, fence: Fence | None = None,
                       attachment: bool = False, before_disk: bool = False) -> None:
        self._enter("write_metadata")
        self._check_ds(loc.datastore)
        if fence is not None:
            fence.check()
        # through JSON, as a real metadata file would go
        self.metadata[_key(loc)] = json.loads(json.dumps(data))
        self.record_times[_key(loc)] = time.time()
        self._leave("write_metadata")

    def delete_metadata(self, loc: DiskLocation, fence: Fence | None = None) -> None:
        self._enter("delete_metadata")
        if fence is not None:
            fence.check()
        self.metadata.pop(_key(loc), None)

    def park_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        self._enter("park_metadata")
        fence.check()
        if _key(loc) not in self.metadata:
            raise BackendError(f"no metadata for {loc.name}")
        self.parked[(fence.staging, name)] = self.metadata.pop(_key(loc))

    def unpark_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        self.metadata[_key(loc)] = self.parked.pop((fence.staging, name))

    # -- disks ------------------------------------------------------------------------
    def _new_disk(self, loc: DiskLocation, size_bytes: int, diskformat: str,
                  data: dict[int, bytes] | None = None, policy: str | None = None) -> str:
        self._check_ds(loc.datastore)
        if _key(loc) in self.disks:
            raise DiskExists(f"disk {loc.descriptor_path} already exists on {loc.datastore}")
        if size_bytes > self.free[loc.datastore]:
            raise InsufficientSpace(f"datastore {loc.datastore} ran out of space")
        self._next_disk += 1
        disk_uuid = new_disk_uuid()
        self.disks[_key(loc)] = {"size_bytes": size_bytes, "diskformat": diskformat,
                                 "uuid": disk_uuid, "policy": policy,
                                 "data": dict(data or {}), "number": self._next_disk,
                                 "made_at": time.time()}
        return disk_uuid

    def close(self) -> None:
        self.calls["close"] += 1

    def create_disk(self, loc: DiskLocation, size_mb: int, diskformat: str,
                    storage_policy: str | None) -> str:
        self._enter("create_disk")
        disk_uuid = self._new_disk(loc, size_mb * MB, diskformat, policy=storage_policy)
        self._leave("create_disk")
        return disk_uuid

    def clone_disk(self, src: DiskLocation, dst: DiskLocation, diskformat: str) -> str:
        self._enter("clone_disk")
        source = self.disks.get(_key(src))
        if source is None:
            raise BackendError(f"source disk {src.descriptor_path} is missing")
        disk_uuid = self._new_disk(dst, source["size_bytes"], diskformat, data=source["data"])
        self._leave("clone_disk")
        return disk_uuid

    def grow_disk(self, loc: DiskLocation, size_mb: int, attach_info: dict | None) -> None:
        self._enter("grow_disk")
        disk = self.disks.get(_key(loc))
        if disk is None:
            raise BackendError(f"disk {loc.descriptor_path} is missing")
        extra = size_mb * MB - disk["size_bytes"]
        if extra > 0:
            if extra > self.free[loc.datastore]:
                raise InsufficientSpace(f"datastore {loc.datastore} ran out of space")
            disk["size_bytes"] = size_mb * MB
            self.grown.append((loc.name, size_mb, attach_info))
        self._leave("grow_disk")

    def delete_disk(self, loc: DiskLocation) -> None:
        self._enter("delete_disk")
        self.disks.pop(_key(loc), None)

    def disk_blank(self, loc: DiskLocation) -> bool | None:
        return None  # as the vsphere backend: the record says

    def file_times(self, loc: DiskLocation) -> FileTimes:
        disk = self.disks.get(_key(loc))
        return FileTimes(disk["made_at"] if disk is not None else None,
                         self.record_times.get(_key(loc)) if _key(loc) in self.metadata
                         else None)

    def disk_allocated_bytes(self, loc: DiskLocation) -> int:
        disk = self.disks.get(_key(loc))
        if disk is None:
            return 0
        if disk["diskformat"] == "thin":
            return sum(len(b) for b in disk["data"].values())
        return disk["size_bytes"]

    # -- attach -----------------------------------------------------------------------
    def attach_disk(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                    disk_uuid: str | None = None) -> dict:
        self._enter("attach_disk")
        disk = self.disks.get(_key(loc))
        if disk is None:
            raise BackendError(f"disk {loc.descriptor_path} is missing")
        holder = self.attached.get(_key(loc))
        if holder is not None:
            raise BackendError(f"disk {loc.descriptor_path} is already attached to {holder[0]}")
        # one device per disk, so the guest's view of a disk's filesystem stays stable
        info = {"kind": "loop", "device": f"/dev/loop{disk['number']}",
                "read_only": read_only, "attach_as": attach_as}
        self.attached[_key(loc)] = (vm, info)
        self._leave("attach_disk")
        return dict(info)

    def attach_recorded(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                        disk_uuid: str | None, record: RecordWrite) -> dict:
        return attach_then_record(self, loc, vm, read_only, attach_as, disk_uuid, record)

    def detach_recorded(self, loc: DiskLocation, vm: str, attach_info: dict | None,
                        record: RecordWrite) -> None:
        detach_then_record(self, loc, vm, attach_info, record)

    def detach_disk(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> None:
        self._enter("detach_disk")
        holder = self.attached.get(_key(loc))
        if holder is not None and (not vm or holder[0] == vm):
            del self.attached[_key(loc)]
        self._leave("detach_disk")

    def is_attached(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> bool:
        holder = self.attached.get(_key(loc))
        if holder is None:
            return False
        if attach_info is None:
            return True
        return holder[0] == vm and holder[1].get("device") == attach_info.get("device")

    def vm_powered_on(self, vm: str) -> bool:
        return vm not in self.powered_off

    def release_orphans(self, datastore: str) -> int:
        return 0

    # -- views for assertions ---------------------------------------------------------
    def holder_of(self, name: str, datastore: str = "ds1", vmgroup: str = "_DEFAULT") -> str | None:
        holder = self.attached.get((datastore, vmgroup, name))
        return holder[0] if holder else None


class FakeStoragePolicies:
    """The StoragePolicyService in memory: policy name -> (profile id, rules). Rules are
    parsed by the real ``vsan_rules.parse_rules``, as the PBM service does first, so bad ones
    are refused alike; ``calls`` records (method, name) in order; ``fail[method] = exc``
    raises once, after the rules were parsed (a policy service that went away)."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.policies: dict[str, tuple[str, str]] = {
            name: (f"id-{i}", rules) for i, (name, rules) in enumerate((known or {}).items())}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, BaseException] = {}
        self._next = len(self.policies)

    def _enter(self, method: str, name: str, content: str | None = None) -> None:
        self.calls.append((method, name))
        if content is not None:
            from esx_service.vsphere.vsan_rules import parse_rules  # pyVmomi: only when used

            parse_rules(content)
        exc = self.fail.pop(method, None)
        if exc is not None:
            raise exc

    def _find(self, name: str) -> str | None:
        return next((n for n in self.policies if n.lower() == name.lower()), None)

    def policy_id(self, name: str) -> str:
        self._enter("policy_id", name)
        found = self._find(name)
        if found is None:
            raise InvalidOption(f"unknown vsan-policy-name {name!r}; known storage policies: "
                                f"{', '.join(sorted(self.policies)) or 'none'}")
        return self.policies[found][0]

    def create_policy(self, name: str, content: str) -> str:
        self._enter("create_policy", name, content)
        if self._find(name) is not None:
            raise BadRequest(f"a storage policy named {self._find(name)!r} already exists")
        self._next += 1
        self.policies[name] = (f"id-{self._next}", content)
        return self.policies[name][0]

    def update_policy(self, name: str, content: str, *, in_use: bool = True) -> None:
        self._enter("update_policy", name, content)
        found = self._find(name)
        if found is None:
            self.create_policy(name, content)
            return
        self.policies[found] = (self.policies[found][0], content)  # in place, as PbmUpdate

    def delete_policy(self, name: str) -> None:
        self._enter("delete_policy", name)
        found = self._find(name)
        if found is not None:
            del self.policies[found]


class FakeLosetup:
    """A command runner that plays ``losetup`` (find/show, list, set-capacity, detach) for
    LocalBackend."""

    def __init__(self) -> None:
        self.devices: dict[str, tuple[str, bool]] = {}  # device -> (backing file, read-only)
        self.argvs: list[list[str]] = []
        self.capacity_refreshed: list[str] = []
        self._next = 0

    def __call__(self, argv: list[str], timeout: float = 60.0) -> str:
        self.argvs.append(list(argv))
        if argv[0] != "losetup":
            raise BackendError(f"unexpected command {argv!r}")
        if "--find" in argv and "--show" in argv:
            path = argv[-1]
            if not os.path.exists(path):
                raise BackendError(f"losetup: {path}: failed to set up loop device")
            device = f"/dev/loop{self._next}"
            self._next += 1
            self.devices[device] = (path, "--read-only" in argv)
            return device + "\n"
        if "--list" in argv:
            return "".join(f"{dev} {path}\n" for dev, (path, _) in sorted(self.devices.items()))
        if argv[1] == "--set-capacity":
            if argv[2] not in self.devices:
                raise BackendError(f"losetup: {argv[2]}: set capacity failed: No such device")
            self.capacity_refreshed.append(argv[2])
            return ""
        if argv[1] == "--detach":
            if self.devices.pop(argv[2], None) is None:
                raise BackendError(f"losetup: {argv[2]}: detach failed: No such device")
            return ""
        raise BackendError(f"unexpected losetup call {argv!r}")

    def backing(self, path: str) -> list[str]:
        real = os.path.realpath(path)
        return [d for d, (p, _) in self.devices.items() if os.path.realpath(p) == real]


class FakeEsxClient(HttpEsxClient):
    """The real client's methods and error mapping, with the transport replaced by a call
    into the real ``Api`` (and so a real ``VolumeService``) as VM ``vm``.
    ``unreachable = True`` makes every call fail as a dead socket would."""

    def __init__(self, service: VolumeService, vm: str = "vm1") -> None:
        super().__init__("unix:///nonexistent/fake.sock")
        self.api = Api(service)
        self.service = service
        self.vm = vm
        self.unreachable = False
        self.requests: list[tuple[str, str]] = []

    def call(self, method: str, path: str, body: dict | None = None,
             timeout: float | None = None) -> dict:
        self.requests.append((method, path))
        if self.unreachable:
            raise ServiceUnreachable(f"dockvols service at {self.address} is unreachable "
                                     f"({method} {path}): [Errno 111] Connection refused")
        raw = json.dumps(body).encode() if body is not None else b""
        status, reply = self.api.handle(method, path, raw, self.vm)
        # only what survives the wire (List's answer is JSON already)
        reply = json.loads(reply.body if isinstance(reply, Text) else json.dumps(reply))
        if status >= 400:
            err = reply.get("error") or {}
            raise ServiceError(err.get("code", "InternalError"),
                               err.get("message", f"HTTP {status}"), status)
        return reply


class FakeBlockDevices:
    """The guest's view of its block devices, for FakeBackend's loop-style devices: a device
    is as big as its disk, unless ``stale`` says the kernel has not seen the disk grow yet
    (until a rescan). ``fs`` is the size each filesystem spans (mkfs and grow set it)."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self.stale: dict[str, int] = {}
        self.fs: dict[str, int] = {}
        self.rescans: list[str] = []
        self.held: set[str] = set()  # devices something holds (e.g. mounted elsewhere)

    def disk_bytes(self, device: str) -> int:
        number = int(device.removeprefix("/dev/loop"))
        for disk in self.backend.disks.values():
            if disk["number"] == number:
                return int(disk["size_bytes"])
        raise DeviceError(f"no such device {device}")

    def size(self, device: str) -> int:
        return self.stale.get(device, self.disk_bytes(device))

    def rescan(self, device: str) -> None:
        self.rescans.append(device)
        self.stale.pop(device, None)

    def filesystem_size(self, device: str, fstype: str) -> int | None:
        return self.fs.get(device)

    def claimed(self, device: str) -> bool:
        return device in self.held


class FakeMounter:
    """Filesystems per device and a mount table; ``fail`` maps a method to the exception
    its next call raises. With ``blocks``, mkfs and grow make a filesystem span its device."""

    def __init__(self, blocks: FakeBlockDevices | None = None) -> None:
        self.blocks = blocks
        self.grow_log: list[tuple[str, str, str]] = []
        self.filesystems: dict[str, str] = {}
        self.table: dict[str, dict] = {}  # target -> {device, fstype, read_only}
        self.fail: dict[str, BaseException] = {}
        self.calls: Counter[str] = Counter()
        self.mkfs_log: list[tuple[str, str, str]] = []

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        exc = self.fail.pop(method, None)
        if exc is not None:
            raise exc

    def filesystem_of(self, device: str) -> str | None:
        self._enter("filesystem_of")
        return self.filesystems.get(device)

    def mkfs(self, device: str, fstype: str, label: str) -> None:
        self._enter("mkfs")
        self.mkfs_log.append((device, fstype, label))
        self.filesystems[device] = fstype
        if self.blocks is not None:
            self.blocks.fs[device] = self.blocks.size(device)

    def grow_unmounted(self, device: str, fstype: str) -> None:
        self._enter("grow_unmounted")
        if fstype != "ext4" or any(m["device"] == device for m in self.table.values()):
            raise FilesystemError(f"cannot grow {fstype} on {device} unmounted")
        self.grow_log.append((device, "", fstype))
        if self.blocks is not None:
            self.blocks.fs[device] = self.blocks.size(device)

    def grow(self, device: str, target: str, fstype: str) -> None:
        self._enter("grow")
        if self.table.get(target, {}).get("device") != device:
            raise FilesystemError(f"growing {fstype} on {device}: not mounted at {target}")
        self.grow_log.append((device, target, fstype))
        if self.blocks is not None:
            self.blocks.fs[device] = self.blocks.size(device)

    def mount(self, device: str, target: str, fstype: str, read_only: bool) -> None:
        self._enter("mount")
        if self.filesystems.get(device) != fstype:
            raise FilesystemError(f"mount {device} on {target} failed: wrong fs type {fstype}")
        if target in self.table:
            raise FilesystemError(f"{target} is already a mount point")
        self.table[target] = {"device": device, "fstype": fstype, "read_only": read_only}

    def umount(self, target: str) -> None:
        self._enter("umount")
        if target not in self.table:
            raise FilesystemError(f"umount {target} failed: not mounted")
        del self.table[target]

    def is_mount_point(self, target: str) -> bool:
        return target in self.table

    def mounts_under(self, root: str) -> dict[str, str]:
        prefix = root.rstrip("/") + "/"
        return {t: m["device"] for t, m in self.table.items() if t.startswith(prefix)}


class FakeDeviceFinder:
    """Loop attach answers name their device; anything else is not found."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.found: list[str] = []

    def find(self, attach: dict, volume: str) -> str:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        if attach.get("kind") != "loop" or not str(attach.get("device", "")).startswith(
                "/dev/loop"):
            raise DeviceError(f"volume {volume}: cannot find device for {attach!r}")
        self.found.append(attach["device"])
        return attach["device"]

    def find_now(self, attach: dict, volume: str) -> str | None:
        device = str(attach.get("device", ""))
        return device if attach.get("kind") == "loop" and device.startswith("/dev/loop") else None


class FakeDockerUsers:
    """Recovery's view of the Docker engine: canonical volume -> live container IDs."""

    def __init__(self, users: dict[str, set[str]] | None = None) -> None:
        self.users: dict[str, set[str]] = {k: set(v) for k, v in (users or {}).items()}
        self.fail_times = 0
        self.queries = 0

    def by_volume(self) -> dict[str, set[str]]:
        self.queries += 1
        if self.fail_times:
            self.fail_times -= 1
            raise DockerUnreachable("Docker at unix:///fake/docker.sock cannot be asked: "
                                    "connection refused")
        return {k: set(v) for k, v in self.users.items() if v}

    def users_of(self, canonical: str) -> set[str]:
        return self.by_volume().get(canonical, set())


def one_shot_unix_server(path: str, reply: bytes | None) -> threading.Thread:
    """Accept one connection on ``path``; answer ``reply`` raw, or say nothing until the
    client hangs up."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        if reply is not None:
            conn.sendall(reply)
        else:
            conn.recv(1)  # wait for the client to give up
        conn.close()
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
