"""The plugin's one exception family; app.py turns any of them into ``{"Err": ...}``."""

from __future__ import annotations


class PluginError(Exception):
    code = "PluginError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(PluginError):
    code = "BadRequest"


class ServiceError(PluginError):
    """esx_service answered with an error; ``code`` is its stable code (dockvols_common.wire)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ServiceUnreachable(PluginError):
    code = "ServiceUnreachable"


class DockerUnreachable(PluginError):
    """The Docker engine could not be asked which containers use volumes (not up yet, or
    its socket is missing)."""

    code = "DockerUnreachable"


class VolumeInUse(PluginError):
    code = "VolumeInUse"


class RecoveryPending(PluginError):
    code = "RecoveryPending"


class DeviceError(PluginError):
    code = "DeviceError"


class FilesystemError(PluginError):
    code = "FilesystemError"
