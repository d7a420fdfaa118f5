"""Shared fixtures for the fast, rootless unit suite."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:  # `from tests.fakes import ...` under --import-mode=importlib
    sys.path.insert(0, _REPO)

from esx_service.backends.local import LocalBackend  # noqa: E402
from esx_service.volumes import VolumeService  # noqa: E402
from plugin.refcounts import RefCounts  # noqa: E402
from plugin.volume_cache import VolumeCache  # noqa: E402
from plugin.volume_manager import LiveUsers, VolumeManager  # noqa: E402
from tests.fakes import (  # noqa: E402
    FakeBackend,
    FakeBlockDevices,
    FakeDeviceFinder,
    FakeEsxClient,
    FakeLosetup,
    FakeMounter,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DOCKVOLS_* setting of the developer's shell leaks in (a stray
    DOCKVOLS_FAULT_POINTS would SIGKILL the test run)."""
    for var in list(os.environ):
        if var.startswith("DOCKVOLS_"):
            monkeypatch.delenv(var)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory short enough for unix socket paths (at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="dvu-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def losetup() -> FakeLosetup:
    return FakeLosetup()


@pytest.fixture
def local_backend(tmp_path: Path, losetup: FakeLosetup) -> LocalBackend:
    return LocalBackend({"ds1": str(tmp_path / "ds1"), "ds2": str(tmp_path / "ds2")},
                        run=losetup)


class PluginRig:
    """A VolumeManager wired to fakes, with a real VolumeService behind the client."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.backend = FakeBackend()
        self.service = VolumeService(self.backend)
        self.client = FakeEsxClient(self.service, vm="vm1")
        self.blocks = FakeBlockDevices(self.backend)
        self.mounter = FakeMounter(self.blocks)
        self.devices = FakeDeviceFinder()
        self.mount_root = str(tmp_path / "mnt")
        self.manager = self.restart()
        self.manager.recovered.set()

    def restart(self, users: LiveUsers | None = None) -> VolumeManager:
        """A fresh manager on the same state files, mount table and service: a plugin
        restart, with ``users`` as its view of Docker. ``recovered`` is left unset, as after
        a real start."""
        self.manager = VolumeManager(
            client=self.client, mounter=self.mounter, devices=self.devices,
            refs=RefCounts(str(self.tmp_path / "state" / "refcounts.json")),
            cache=VolumeCache(str(self.tmp_path / "state" / "volumes-cache.json")),
            mount_root=self.mount_root, blocks=self.blocks, query_timeout=1.0, users=users)
        return self.manager

    def target(self, canonical: str) -> str:
        return os.path.join(self.mount_root, canonical)


@pytest.fixture
def rig(tmp_path: Path) -> PluginRig:
    return PluginRig(tmp_path)
