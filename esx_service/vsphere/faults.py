"""vSphere faults -> the esx_service error family, by fault class only.

Fault *messages* are not a contract (vcsim answers with Go type names such as
``*types.FileAlreadyExists``, real hosts localise them), so decisions are made on classes,
and messages are built from the fault's own fields.
"""

from __future__ import annotations

from pyVmomi import VmomiSupport, vim, vmodl

from ..errors import (
    AccessDenied,
    BackendError,
    DiskExists,
    DockvolsError,
    InsufficientSpace,
    UnknownDatastore,
    VolumeInUse,
)

# Most specific first: several of these are subclasses of others (e.g. NotAuthenticated is
# a NoPermission, InvalidDatastorePath an InvalidDatastore, FileLocked a FileFault).
_RULES: tuple[tuple[tuple[type, ...], type[DockvolsError]], ...] = (
    ((vim.fault.NoDiskSpace, vim.fault.InsufficientStorageSpace), InsufficientSpace),
    # A disk held open by another running VM: the classic "in use elsewhere" answer of ESX.
    ((vim.fault.FileLocked,), VolumeInUse),
    ((vim.fault.InvalidDatastorePath,), BackendError),
    ((vim.fault.FileAlreadyExists,), DiskExists),
    ((vim.fault.InvalidDatastore,), UnknownDatastore),
    ((vim.fault.NotAuthenticated,), BackendError),
    ((vim.fault.NoPermission, vmodl.fault.SecurityError), AccessDenied),
)

# Field names worth showing, in the order shown: they say *which* file/datastore/device.
_DETAIL_FIELDS = ("file", "name", "datastore", "property", "invalidProperty", "object",
                  "privilegeId", "state", "requestedState")


def fault_name(fault: BaseException) -> str:
    """``FileNotFound`` for ``vim.fault.FileNotFound``; the class name for anything else."""
    return getattr(type(fault), "_wsdlName", None) or type(fault).__name__


def describe(fault: BaseException) -> str:
    """A readable one-liner: fault class, the identifying fields, and the message when it
    says more than the class name does."""
    parts = [fault_name(fault)]
    for field in _DETAIL_FIELDS:
        value = getattr(fault, field, None)
        if value not in (None, "", []):
            parts.append(f"{field}={_short(value)}")
    msg = getattr(fault, "msg", None) or ""
    if isinstance(fault, vmodl.MethodFault) and msg and not _just_type_name(msg, fault):
        parts.append(f"({msg.strip()})")
    elif not isinstance(fault, vmodl.MethodFault) and str(fault):
        parts.append(f"({fault})")
    return " ".join(parts)


def translate(fault: BaseException, what: str) -> DockvolsError:
    """The DockvolsError to raise for ``fault`` met while doing ``what``."""
    if isinstance(fault, DockvolsError):
        return fault
    for classes, error in _RULES:
        if isinstance(fault, classes):
            return error(f"{what} failed: {describe(fault)}")
    return BackendError(f"{what} failed: vSphere fault {describe(fault)}")


def _just_type_name(msg: str, fault: BaseException) -> bool:
    # vcsim's messages are "*types.<FaultName>": no information beyond the class.
    return msg.strip().lstrip("*").removeprefix("types.") == fault_name(fault)


def _short(value: object) -> str:
    if isinstance(value, VmomiSupport.ManagedObject):
        return str(value._moId)
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."
