"""An admin stack in-process: LocalBackend on tmp datastores (losetup faked), the admin DB,
DbAccess, VolumeService, AdminService (with the ``storage_policies`` fixture's VSAN policy
service: none, as on local, unless a test gives one) and AdminApi served on a real unix
socket for the CLI."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esx_service.admin import cli
from esx_service.admin.admin_api import AdminApi
from esx_service.admin.db import AdminDb
from esx_service.admin.db_access import DbAccess
from esx_service.admin.importer import Importer
from esx_service.admin.service import AdminService
from esx_service.backends.base import StoragePolicyService
from esx_service.backends.local import LocalBackend
from esx_service.server import UnixApiServer
from esx_service.volumes import VolumeService


class FakeLosetup:
    """Enough of losetup for attach/detach without root: device -> (extent, read-only)."""

    def __init__(self) -> None:
        self.devices: dict[str, tuple[str, bool]] = {}
        self._next = 0

    def __call__(self, argv: list[str], timeout: float = 60.0) -> str:
        if "--find" in argv:
            device = f"/dev/loop{self._next}"
            self._next += 1
            self.devices[device] = (argv[-1], "--read-only" in argv)
            return device + "\n"
        if "--detach" in argv:
            self.devices.pop(argv[-1], None)
            return ""
        return "".join(f"{dev} {extent}\n" for dev, (extent, _) in self.devices.items())


@dataclass
class Stack:
    root: Path
    db: AdminDb
    service: VolumeService
    admin: AdminApi
    socket: str
    losetup: FakeLosetup

    def datastore(self, name: str) -> Path:
        return self.root / name


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dva-", dir="/tmp")  # unix socket paths: 107 bytes at most
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[AdminDb]:
    database = AdminDb(str(tmp_path / "db" / "dockvols.db"))
    yield database
    database.close()


@pytest.fixture
def storage_policies() -> StoragePolicyService | None:
    """The admin service's VSAN policy service: none, as the local backend has none.
    ``@pytest.mark.parametrize("storage_policies", [FakeStoragePolicies()])`` gives one."""
    return None


@pytest.fixture
def stack(tmp_path: Path, short_dir: str, db: AdminDb,
          storage_policies: StoragePolicyService | None) -> Iterator[Stack]:
    losetup = FakeLosetup()
    backend = LocalBackend({"ds1": str(tmp_path / "ds1"), "ds2": str(tmp_path / "ds2")},
                           run=losetup)
    service = VolumeService(backend, "ds1", DbAccess(db))
    admin = AdminApi(AdminService(service, db, storage_policies), Importer(service, backend, db),
                     log_file="/var/log/dockvols.log", config_source="test",
                     listeners=["/run/dockvols/esx.sock (VM host1)"])
    path = os.path.join(short_dir, "admin.sock")
    server = UnixApiServer(path, admin, "admin", mode=0o600)
    # Polling every 50ms rather than serve_forever's 0.5s default keeps each stop() short.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield Stack(tmp_path, db, service, admin, path, losetup)
    server.stop()


@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def run(stack: Stack, capsys: pytest.CaptureFixture[str]):
    """``run("vmgroup", "ls")``: dockvols-admin against the stack's admin socket."""

    def _run(*argv: str) -> CliRun:
        capsys.readouterr()
        code = cli.main([*argv, "--socket", stack.socket])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return _run
