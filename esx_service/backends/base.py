"""The contract between volume operations and a storage backend.

The volume layer owns names, options, locking, the metadata state machine and in-use rules;
a backend only stores disks and metadata files and attaches disks to VMs. Every method
raises only ``esx_service.errors`` types, and the removing/detaching methods are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dockvols_common.faults import fault_point

from ..errors import DockvolsError
from ..file_names import file_stem


@dataclass(frozen=True)
class DatastoreInfo:
    name: str
    type: str
    capacity_bytes: int
    free_bytes: int
    url: str


@dataclass(frozen=True)
class DiskLocation:
    """Where a volume lives: ``[datastore] dockvols/<vmgroup>/<stem>.vmdk``; ``name`` is the
    volume name as typed, ``stem`` its file-safe form (``esx_service.file_names``)."""

    datastore: str
    vmgroup: str
    name: str

    @property
    def stem(self) -> str:
        return file_stem(self.name)

    @property
    def folder(self) -> str:
        return f"dockvols/{self.vmgroup}"

    @property
    def descriptor_path(self) -> str:
        return f"{self.folder}/{self.stem}.vmdk"

    @property
    def metadata_path(self) -> str:
        return f"{self.folder}/{self.stem}.json"


@dataclass(frozen=True)
class FileTimes:
    """When a volume's disk (its descriptor) and its record were last changed, in seconds
    since the epoch as the datastore stamps its files; None where there is no such file.
    Both come from the same datastore's clock, so they compare with each other and with
    the lease's marks (esx_service.cluster_locks), never with this host's clock."""

    disk: float | None
    record: float | None


class Fence(Protocol):
    """A lease that fences writes (``esx_service.leases.Lease``): a backend stages a fenced
    write in ``staging`` (a folder on the same datastore) and renames it into place from
    there, which fails once the lease was taken over; it raises ``lost_error()`` then."""

    @property
    def staging(self) -> str:
        """The holder's staging folder, relative to the datastore."""

    def check(self) -> None:
        """Raise LeaseLost unless the holder can still trust the lease."""

    def lost_error(self) -> DockvolsError:
        """The error to raise when the datastore refused a fenced write."""

    def later(self, finish: Callable[[], None]) -> None:
        """Wait for work already sent (``finish``) only before the lease's next write, its
        reuse or its release: off the operation's path."""

    def settle(self) -> None:
        """Run what ``later`` was given."""


@dataclass(frozen=True)
class RecordWrite:
    """The volume record that goes with an attach or detach (``Backend.attach_recorded``,
    ``detach_recorded``)."""

    make: Callable[[dict | None], dict]  # the attach answer (None for a detach) -> the record
    previous: dict                       # the record before: written back if the change fails
    fence: Fence | None
    attachment: bool = True              # Backend.write_metadata's ``attachment``


def attach_then_record(backend: Backend, loc: DiskLocation, vm: str, read_only: bool,
                       attach_as: str, disk_uuid: str | None, record: RecordWrite) -> dict:
    """``Backend.attach_recorded`` of a backend whose attach is done when it answers: the
    record after the disk, and the disk detached again if the record fails."""
    info = backend.attach_disk(loc, vm, read_only, attach_as, disk_uuid=disk_uuid)
    fault_point("attach.disk_attached")
    try:
        backend.write_metadata(loc, record.make(info), fence=record.fence,
                               attachment=record.attachment)
    except BaseException:
        backend.detach_disk(loc, vm, info)
        raise
    return info


def detach_then_record(backend: Backend, loc: DiskLocation, vm: str,
                       attach_info: dict | None, record: RecordWrite) -> None:
    """``Backend.detach_recorded`` of a backend whose detach is done when it answers."""
    backend.detach_disk(loc, vm, attach_info)
    fault_point("detach.disk_detached")
    backend.write_metadata(loc, record.make(None), fence=record.fence,
                           attachment=record.attachment)


class StoragePolicyService(Protocol):
    """VSAN storage policies (vSphere's PBM): the capability a backend offers through its
    ``storage_policies`` attribute, None where it has none (local). Rules are vDVS's strings
    (``esx_service.vsphere.vsan_rules``); bad rules raise InvalidOption before any change."""

    def policy_id(self, name: str) -> str:
        """The profile id of the policy ``name`` (any case); InvalidOption naming the known
        ones when there is none."""

    def create_policy(self, name: str, content: str) -> str:
        """Make the policy ``name`` of the rules ``content``; its profile id. A name the
        policy service already has is refused (BadRequest)."""

    def update_policy(self, name: str, content: str, *, in_use: bool = True) -> None:
        """New rules for ``name`` (made if missing). ``in_use``: volumes' disks carry its
        id, so it must not be replaced by a new one."""

    def delete_policy(self, name: str) -> None:
        """Remove the policy ``name``; one that does not exist is already removed."""


class Backend(Protocol):
    name: str

    @property
    def storage_policies(self) -> StoragePolicyService | None:
        """VSAN storage policies, None when the backend has none: ask this, never the name."""

    def close(self) -> None:
        """Release what the backend holds (the vsphere backend logs its session out)."""

    def datastores(self) -> list[DatastoreInfo]:
        """All datastores this service can place volumes on."""

    def default_datastore(self, vm: str) -> str | None:
        """The datastore of the calling VM, or None when the backend has no such notion."""

    def list_metadata(self, datastore: str) -> list[dict]:
        """Raw metadata of every volume on a datastore, all vmgroups, every status. A
        backend may hand back the same dict objects again while the metadata is unchanged
        (the local backend does): callers must not change them."""

    def read_metadata(self, loc: DiskLocation) -> dict | None:
        """The metadata of one volume, None when there is no metadata file."""

    def write_metadata(self, loc: DiskLocation, data: dict, fence: Fence | None = None,
                       attachment: bool = False, before_disk: bool = False) -> None:
        """Replace the metadata file atomically (creating the folder if needed); with a
        fence, only while the fence's lease holds (staged in its folder, then renamed).
        ``attachment``: the write changes only where the disk is attached (and whether the
        guest reported a filesystem). A backend whose attachments die with the host may
        let a host crash lose such a write (the old record, whole, stays): recovery then
        rebuilds the record from the attachments themselves (issue 15).
        ``before_disk``: a create's `creating` record, which the disk's files follow in the
        same folder and the create's last write makes durable. A backend whose datastore
        journals names in the order they were made may leave this name's durability to
        that: a crash can keep the disk's names only with this one's, and recovery undoes
        a create that kept any of them (issue 15). It may leave the content's durability
        too, if it then reads a record a crash emptied as a `creating` one: all recovery
        needs of it is the location, which the file's own name gives."""

    def delete_metadata(self, loc: DiskLocation, fence: Fence | None = None) -> None:
        """Remove the metadata file, fenced like ``write_metadata``; missing is fine."""

    def park_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        """Move the metadata file into the lease's staging folder as ``name``, durably,
        before the disk goes (a remove): out of everyone's sight at once, and a mark the
        lease's next holder finds should this one die before the disk is gone. Raises the
        fence's lost error once the lease was taken over, BackendError if there is no file."""

    def unpark_metadata(self, loc: DiskLocation, fence: Fence, name: str) -> None:
        """Move a parked metadata file back into place (the disk could not be deleted)."""

    def create_disk(self, loc: DiskLocation, size_mb: int, diskformat: str,
                    storage_policy: str | None) -> str:
        """Create the VMDK (with the VSAN storage policy of that name, if given); returns the
        disk UUID. Raises InsufficientSpace/BackendError, InvalidOption for a policy that is
        unknown or that the backend cannot apply."""

    def clone_disk(self, src: DiskLocation, dst: DiskLocation, diskformat: str) -> str:
        """Copy a detached disk to a new one; returns the new disk's UUID."""

    def grow_disk(self, loc: DiskLocation, size_mb: int, attach_info: dict | None) -> None:
        """Grow the disk to ``size_mb``; never shrinks, and a disk already that big is left
        as it is (so recovery can repeat it). With ``attach_info`` (attached), the running
        attachment is made to show the new size as well (vSphere: the VM's virtual disk;
        local: the loop device's capacity)."""

    def delete_disk(self, loc: DiskLocation) -> None:
        """Delete descriptor and extent; missing is fine."""

    def file_times(self, loc: DiskLocation) -> FileTimes:
        """When the disk and the record were last changed. Whoever undoes a create that
        died tells by it the create's own disk from one that was there before the create
        began (a vDVS disk not yet imported, an import cut short), which the create met
        (DiskExists) and must never delete: a disk older than the create's mark or its
        `creating` record is not the create's (issue 15)."""

    def disk_allocated_bytes(self, loc: DiskLocation) -> int:
        """Bytes the disk really uses on the datastore (0 if unknown)."""

    def disk_blank(self, loc: DiskLocation) -> bool | None:
        """False when the disk provably holds data now; True when it provably does not (a
        host crash that lost writes can only make it more so); None when the backend
        cannot tell without cost. The volume's record (VolumeMeta.blank) decides with it:
        a filesystem may report a just-written file's blocks late (ZFS, until its
        transaction group syncs), so True alone never makes a disk blank."""

    def attach_disk(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                    disk_uuid: str | None = None) -> dict:
        """Attach to the VM; returns what the guest needs to find the disk. ``disk_uuid``:
        the disk's UUID as recorded at create, for a backend that would otherwise ask."""

    def detach_disk(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> None:
        """Detach from the VM; not attached is fine."""

    def attach_recorded(self, loc: DiskLocation, vm: str, read_only: bool, attach_as: str,
                        disk_uuid: str | None, record: RecordWrite) -> dict:
        """``attach_disk`` and the volume's record ``record.make(answer)``; returns the
        answer. A backend whose attach is done when it answers writes the record after it
        (``attach_then_record``). One whose attach is a request that runs on a server
        (vSphere's reconfigure) may send the record beside it and read both ends in one
        read (issue 15: a round trip less), so the record may land first: a crash between
        leaves a record saying attached while the disk is not, which the next attach and
        recovery check against the VM's devices. Either way, if the attach fails after
        the record landed, ``record.previous`` is written back; if the record fails after
        the attach, the disk is detached again."""

    def detach_recorded(self, loc: DiskLocation, vm: str, attach_info: dict | None,
                        record: RecordWrite) -> None:
        """``detach_disk`` and the record ``record.make(None)``, as ``attach_recorded``; a
        record that fails after the detach leaves the disk detached (the next attach and
        recovery see it)."""

    def is_attached(self, loc: DiskLocation, vm: str, attach_info: dict | None) -> bool:
        """Whether the disk really is attached to that VM now. With ``attach_info`` None:
        whether it is attached anywhere (a backend that cannot tell cheaply answers False)."""

    def vm_powered_on(self, vm: str) -> bool:
        """Whether the named VM is running (a disk left on a stopped VM may be taken)."""

    def release_orphans(self, datastore: str) -> int:
        """Detach what is attached from a disk file that no longer exists (a loop device on
        a deleted extent); how many. Backends where that cannot happen answer 0."""

    # -- adopting disks made elsewhere (import); paths are relative to the datastore ----
    def read_file(self, datastore: str, path: str, limit: int | None = None) -> bytes | None:
        """The first ``limit`` bytes (all with None) of a file; None when it does not exist."""

    def find_files(self, datastore: str, folder: str, pattern: str) -> list[str]:
        """Paths of files matching ``pattern`` under ``folder`` (subfolders too, never
        through symbolic links)."""

    def disk_users(self, datastore: str, path: str) -> list[str]:
        """Who has the disk at ``path`` attached now (VM names, with their power state)."""

    def move_disk(self, datastore: str, src: str, dst: str) -> str:
        """Move a detached disk (descriptor and extents) within a datastore, creating the
        destination folder; returns its UUID. The destination must not exist."""
