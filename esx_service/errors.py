"""The host side's one exception family.

Every error carries a stable ``code`` (sent on the wire and shown by the CLI) and the HTTP
status it maps to. Code that raises picks the class; only the HTTP and CLI edges translate.
"""

from __future__ import annotations


class DockvolsError(Exception):
    code = "InternalError"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(DockvolsError):
    code = "BadRequest"
    http_status = 400


class InvalidName(DockvolsError):
    code = "InvalidName"
    http_status = 400


class InvalidOption(DockvolsError):
    code = "InvalidOption"
    http_status = 400


class UnknownDatastore(DockvolsError):
    code = "UnknownDatastore"
    http_status = 404


class VolumeNotFound(DockvolsError):
    code = "VolumeNotFound"
    http_status = 404


class VolumeInUse(DockvolsError):
    code = "VolumeInUse"
    http_status = 409


class VolumeExists(DockvolsError):
    """A name is taken where a new volume cannot simply answer "already there" (import)."""

    code = "VolumeExists"
    http_status = 409


class VolumeBusy(DockvolsError):
    """The volume is in a transitional state (being created or removed)."""

    code = "VolumeBusy"
    http_status = 409


class LeaseLost(DockvolsError):
    """This host's lease on a volume or quota was taken over (it stalled past the lease):
    the write was refused by the datastore, so nothing half-done is visible."""

    code = "LeaseLost"
    http_status = 503


class InsufficientSpace(DockvolsError):
    code = "InsufficientSpace"
    http_status = 507


class CapacityLimit(DockvolsError):
    """A fixed limit of the platform is reached (e.g. a VM's SCSI slots): the message names
    the limit. Not the backend failing, so not 502."""

    code = "CapacityLimit"
    http_status = 507


class MethodNotAllowed(DockvolsError):
    code = "MethodNotAllowed"
    http_status = 405


class AccessDenied(DockvolsError):
    code = "AccessDenied"
    http_status = 403


class QuotaExceeded(DockvolsError):
    code = "QuotaExceeded"
    http_status = 403


class NotFound(DockvolsError):
    """A route or object other than a volume does not exist."""

    code = "NotFound"
    http_status = 404


class ServiceStopping(DockvolsError):
    code = "ServiceStopping"
    http_status = 503


class BackendError(DockvolsError):
    """The storage backend failed (disk tool, loop device, vSphere fault)."""

    code = "BackendError"
    http_status = 502


class DiskExists(BackendError):
    """The disk files a create was to make are there already (left by a host that lost its
    lease mid-create, or put there by hand): they are not this create's to delete."""

    code = "DiskExists"
    http_status = 409


class ConfigError(DockvolsError):
    code = "ConfigError"
    http_status = 500


ALL_ERRORS: dict[str, type[DockvolsError]] = {
    cls.code: cls
    for cls in (
        DockvolsError, BadRequest, InvalidName, InvalidOption, UnknownDatastore,
        VolumeNotFound, VolumeInUse, VolumeExists, VolumeBusy, LeaseLost, InsufficientSpace,
        CapacityLimit, MethodNotAllowed, AccessDenied, QuotaExceeded, NotFound,
        ServiceStopping, BackendError, DiskExists, ConfigError,
    )
}
