"""vcsim for the vsphere backend's integration tests.

One vcsim (vCenter model) per test session, plus fresh ones for tests that change VMs
(power, controllers) and the ESX model on demand. Each runs on 127.0.0.1 with a random port
and its own TMPDIR (where its datastores live). A vcsim that cannot be built FAILS the tests
with the build's output: skipping would hide a broken toolchain.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from esx_service.backends.vsphere import VsphereBackend
from esx_service.volumes import VolumeService
from esx_service.vsphere.session import CountingStub, VsphereSession

REPO = Path(__file__).resolve().parents[3]
VCSIM_DIR = REPO / "tests" / "vcsim"
START_TIMEOUT = 20.0


@dataclass
class Vcsim:
    proc: subprocess.Popen
    url: str
    tmpdir: str
    host: str = field(init=False)
    port: int = field(init=False)
    user: str = field(init=False)
    password: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        assert parts.hostname and parts.port and parts.username and parts.password
        self.host, self.port = parts.hostname, parts.port
        self.user, self.password = parts.username, parts.password

    def session(self, **overrides: Any) -> VsphereSession:
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                  "password": self.password, "insecure": True}
        kwargs.update(overrides)
        return VsphereSession(**kwargs)

    def backend(self, **kwargs: Any) -> VsphereBackend:
        return VsphereBackend(self.session(), **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    done = subprocess.run([str(VCSIM_DIR / "build.sh")], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.fail(f"building vcsim failed (exit {done.returncode}):\n{done.stdout}"
                    f"{done.stderr}", pytrace=False)
    return VCSIM_DIR / "vcsim"


def start_vcsim(binary: Path, *args: str) -> Vcsim:
    tmpdir = tempfile.mkdtemp(prefix="dv-vcsim-")
    proc = subprocess.Popen([str(binary), "-port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TMPDIR": tmpdir})
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("VCSIM_URL="):
                return Vcsim(proc, line.strip().split("=", 1)[1], tmpdir)
            if not line and proc.poll() is not None:
                break
    proc.kill()
    proc.wait()
    shutil.rmtree(tmpdir, ignore_errors=True)
    pytest.fail(f"vcsim {' '.join(args)} did not print its URL within {START_TIMEOUT}s "
                f"(exit code {proc.returncode})", pytrace=False)


@pytest.fixture(scope="session")
def vcsim(vcsim_binary: Path) -> Iterator[Vcsim]:
    sim = start_vcsim(vcsim_binary)
    yield sim
    sim.stop()


@pytest.fixture
def fresh_vcsim(vcsim_binary: Path) -> Iterator[Vcsim]:
    """A vcsim of its own, for tests that power VMs off or fill their controllers."""
    sim = start_vcsim(vcsim_binary)
    yield sim
    sim.stop()


@pytest.fixture
def esx_vcsim(vcsim_binary: Path) -> Iterator[Vcsim]:
    sim = start_vcsim(vcsim_binary, "-esx")
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def backend(vcsim: Vcsim) -> Iterator[VsphereBackend]:
    with vcsim.backend() as connected:
        yield connected


@pytest.fixture
def service(backend: VsphereBackend) -> VolumeService:
    return VolumeService(backend)


@pytest.fixture
def name() -> str:
    """A volume name no other test uses (the session vcsim is shared)."""
    return f"v{uuid.uuid4().hex[:10]}"


@pytest.fixture
def soap_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple]]:
    """Every SOAP call made while the test runs, as (method, arguments): what went on the
    wire, for behaviour vcsim accepts but ignores (disk types, policies)."""
    calls: list[tuple[str, tuple]] = []
    original: Callable = CountingStub.InvokeMethod

    def recording(self: CountingStub, mo: Any, info: Any, args: Any,
                  outerStub: Any = None) -> Any:
        calls.append((info.wsdlName, tuple(args)))
        return original(self, mo, info, args, outerStub)

    monkeypatch.setattr(CountingStub, "InvokeMethod", recording)
    return calls
