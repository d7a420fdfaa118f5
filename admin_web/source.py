"""Reads what the page shows from esx_service's root-only admin socket, through the admin
API's one client (esx_service.admin.client), in the words the page and its scraper show."""

from __future__ import annotations

from typing import Protocol

from esx_service.admin.client import AdminClient, NotJson, Refused, Unreachable

TIMEOUT_S = 30.0  # GET volumes sizes every disk: one datastore search per volume on vsphere


class SourceError(Exception):
    """The admin API could not be read; the message says where and why."""


class AdminSource(Protocol):
    def json(self, path: str) -> dict: ...

    def text(self, path: str) -> str: ...


class SocketSource:
    def __init__(self, socket_path: str, timeout: float = TIMEOUT_S) -> None:
        self.client = AdminClient(socket_path, timeout)

    def json(self, path: str) -> dict:
        try:
            return self.client.call("GET", path)
        except Unreachable as exc:
            raise self._unreachable(exc) from exc
        except NotJson as exc:
            raise SourceError(f"admin API {path} answered {exc.status} with non-JSON") from exc
        except Refused as exc:
            code = exc.code if exc.code is not None else exc.status
            raise SourceError(f"admin API {path}: {code}: {exc.message or ''}") from exc

    def text(self, path: str) -> str:
        try:
            return self.client.text(path)
        except Unreachable as exc:
            raise self._unreachable(exc) from exc
        except Refused as exc:
            raise SourceError(f"admin API {path} answered {exc.status}") from exc

    @staticmethod
    def _unreachable(exc: Unreachable) -> SourceError:
        return SourceError(f"cannot read the dockvols admin socket {exc.socket_path}: "
                           f"{exc.cause}; is dockvols-esx-service running?")
