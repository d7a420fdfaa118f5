"""esx_service's error answers as both sides read them: ``{"error": {"code", "message"}}``
with one of the stable codes below. esx_service raises its own exception classes (errors.py)
and the plugin its own (plugin/errors.py); these codes are what crosses between them, so a
renamed class never changes what the other side sees."""

from __future__ import annotations

INTERNAL_ERROR = "InternalError"
BAD_REQUEST = "BadRequest"
INVALID_NAME = "InvalidName"
INVALID_OPTION = "InvalidOption"
UNKNOWN_DATASTORE = "UnknownDatastore"
VOLUME_NOT_FOUND = "VolumeNotFound"
VOLUME_IN_USE = "VolumeInUse"
VOLUME_EXISTS = "VolumeExists"
VOLUME_BUSY = "VolumeBusy"
LEASE_LOST = "LeaseLost"
INSUFFICIENT_SPACE = "InsufficientSpace"
CAPACITY_LIMIT = "CapacityLimit"
METHOD_NOT_ALLOWED = "MethodNotAllowed"
ACCESS_DENIED = "AccessDenied"
QUOTA_EXCEEDED = "QuotaExceeded"
NOT_FOUND = "NotFound"
SERVICE_STOPPING = "ServiceStopping"
BACKEND_ERROR = "BackendError"
DISK_EXISTS = "DiskExists"
CONFIG_ERROR = "ConfigError"

CODES = frozenset({
    INTERNAL_ERROR, BAD_REQUEST, INVALID_NAME, INVALID_OPTION, UNKNOWN_DATASTORE,
    VOLUME_NOT_FOUND, VOLUME_IN_USE, VOLUME_EXISTS, VOLUME_BUSY, LEASE_LOST,
    INSUFFICIENT_SPACE, CAPACITY_LIMIT, METHOD_NOT_ALLOWED, ACCESS_DENIED, QUOTA_EXCEEDED,
    NOT_FOUND, SERVICE_STOPPING, BACKEND_ERROR, DISK_EXISTS, CONFIG_ERROR,
})


def error_body(code: str, message: str) -> dict:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message}}


def error_of(reply: dict) -> dict:
    """The ``{"code", "message"}`` of an error answer's body; ``{}`` when it has none (not
    dockvols answering), so that the reader falls back on the HTTP status."""
    return reply.get("error") or {}

