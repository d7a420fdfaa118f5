"""The host side's one exception family.

Every error carries a stable ``code`` (dockvols_common.wire: sent on the wire, read by the
plugin, shown by the CLI) and the HTTP status it maps to. Code that raises picks the class;
only the HTTP and CLI edges translate.
"""

from __future__ import annotations

from dockvols_common import wire


class DockvolsError(Exception):
    code = wire.INTERNAL_ERROR
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict:
        return wire.error_body(self.code, self.message)


class BadRequest(DockvolsError):
    code = wire.BAD_REQUEST
    http_status = 400


class InvalidName(DockvolsError):
    code = wire.INVALID_NAME
    http_status = 400


class InvalidOption(DockvolsError):
    code = wire.INVALID_OPTION
    http_status = 400


class UnknownDatastore(DockvolsError):
    code = wire.UNKNOWN_DATASTORE
    http_status = 404


class VolumeNotFound(DockvolsError):
    code = wire.VOLUME_NOT_FOUND
    http_status = 404


class VolumeInUse(DockvolsError):
    code = wire.VOLUME_IN_USE
    http_status = 409


class VolumeExists(DockvolsError):
    """A name is taken where a new volume cannot simply answer "already there" (import)."""

    code = wire.VOLUME_EXISTS
    http_status = 409


class VolumeBusy(DockvolsError):
    """The volume is in a transitional state (being created or removed)."""

    code = wire.VOLUME_BUSY
    http_status = 409


class LeaseLost(DockvolsError):
    """This host's lease on a volume or quota was taken over (it stalled past the lease):
    the write was refused by the datastore, so nothing half-done is visible."""

    code = wire.LEASE_LOST
    http_status = 503


class InsufficientSpace(DockvolsError):
    code = wire.INSUFFICIENT_SPACE
    http_status = 507


class CapacityLimit(DockvolsError):
    """A fixed limit of the platform is reached (e.g. a VM's SCSI slots): the message names
    the limit. Not the backend failing, so not 502."""

    code = wire.CAPACITY_LIMIT
    http_status = 507


class MethodNotAllowed(DockvolsError):
    code = wire.METHOD_NOT_ALLOWED
    http_status = 405


class AccessDenied(DockvolsError):
    code = wire.ACCESS_DENIED
    http_status = 403


class QuotaExceeded(DockvolsError):
    code = wire.QUOTA_EXCEEDED
    http_status = 403


class NotFound(DockvolsError):
    """A route or object other than a volume does not exist."""

    code = wire.NOT_FOUND
    http_status = 404


class ServiceStopping(DockvolsError):
    code = wire.SERVICE_STOPPING
    http_status = 503


class BackendError(DockvolsError):
    """The storage backend failed (disk tool, loop device, vSphere fault)."""

    code = wire.BACKEND_ERROR
    http_status = 502


class DiskExists(BackendError):
    """The disk files a create was to make are there already (left by a host that lost its
    lease mid-create, or put there by hand): they are not this create's to delete."""

    code = wire.DISK_EXISTS
    http_status = 409


class ConfigError(DockvolsError):
    code = wire.CONFIG_ERROR
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
