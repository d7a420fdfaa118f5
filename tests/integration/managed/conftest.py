"""Fixtures for the managed-plugin suite: a second private dockerd (its own data and exec
roots and socket, like the parent suite's), the plugin built by scripts/build-plugin.sh
once per session, created in that dockerd as ``<DOCKVOLS_TEST_DRIVER>-managed`` and enabled,
talking to the parent suite's esx_service through a bind mount of its socket's directory."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.processes import REPO, Daemon, answers_activate, wait_for

from ..conftest import (
    DRIVER,
    Docker,
    all_mounts_under,
    import_busybox,
    loops_on,
    mounts_under,
    start_private_dockerd,
)

# Distinct from the legacy socket /run/docker/plugins/$DOCKVOLS_TEST_DRIVER.sock.
NAME = f"{DRIVER}-managed"
FULL_NAME = f"{NAME}:latest"  # what dockerd reports as the volumes' driver


@dataclass(frozen=True)
class ManagedPlugin:
    name: str
    full_name: str
    id: str
    propagated_mount: Path  # the host side of the plugin's /mnt/vmdk
    socket: Path            # the host side of the plugin's /run/docker/plugins/vsphere.sock
    docker: Docker

    def enable(self, timeout: int = 120) -> None:
        self.docker("plugin", "enable", "--timeout", str(timeout), self.name,
                    timeout=timeout + 30)

    def disable(self, force: bool = False) -> None:
        self.docker("plugin", "disable", *(["-f"] if force else []), self.name, timeout=60)

    @property
    def enabled(self) -> bool:
        return self.docker.out("plugin", "inspect", "-f", "{{.Enabled}}", self.name) == "true"

    def activate(self, timeout: float = 2.0) -> bool:
        """True when the plugin's socket answers /Plugin.Activate as a volume driver."""
        return answers_activate(self.socket, timeout)


@pytest.fixture(scope="session")
def mdir(run_dir: Path) -> Path:
    path = run_dir / "m"
    (path / "state").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def mdockerd(run_dir: Path, mdir: Path) -> Iterator[Daemon]:
    daemon, docker = start_private_dockerd("dockerd-managed", mdir, run_dir / "x", mdir / "root")
    yield daemon
    # Leave nothing behind: containers, swarm, the plugin (its mounts go with it), dockerd.
    docker("rm", "-f", *docker.out("ps", "-aq").split(), check=False)
    docker("swarm", "leave", "--force", check=False)
    docker("plugin", "disable", "-f", NAME, check=False)
    docker("plugin", "rm", "-f", NAME, check=False)
    daemon.stop()
    # dockerd leaves <exec-root>/netns/default mounted after a swarm (libnetwork's sandbox).
    for path in reversed(all_mounts_under(mdir) + all_mounts_under(run_dir / "x")):
        subprocess.run(["umount", "-l", path], check=False)
    leaked = all_mounts_under(mdir) + all_mounts_under(run_dir / "x")
    assert not leaked, f"mounts left by the second dockerd: {leaked}"


@pytest.fixture(scope="session")
def mdocker(mdockerd: Daemon, mdir: Path) -> Docker:
    return Docker(f"unix://{mdir / 'docker.sock'}", driver=FULL_NAME)


@pytest.fixture(scope="session")
def mbusybox(mdocker: Docker) -> str:
    return import_busybox(mdocker)


@pytest.fixture(scope="session")
def managed(mdocker: Docker, mdir: Path, run_dir: Path, esx: Daemon) -> Iterator[ManagedPlugin]:
    """Build (cached under build/), create in the second dockerd, point at esx, enable."""
    mdocker("plugin", "rm", "-f", NAME, check=False)
    built = subprocess.run([str(REPO / "scripts" / "build-plugin.sh")],
                           env={**mdocker.env, "PLUGIN_NAME": NAME}, capture_output=True,
                           text=True, timeout=600)
    if built.returncode != 0:
        pytest.fail(f"scripts/build-plugin.sh failed ({built.returncode}):\n"
                    f"{built.stdout[-3000:]}{built.stderr[-3000:]}")
    mdocker("plugin", "set", NAME,
            f"esx-run.source={run_dir}",  # holds esx.sock
            f"state.source={mdir / 'state'}",
            f"docker-sock.source={mdir / 'docker.sock'}",
            "DOCKVOLS_ESX_ADDRESS=unix:///run/dockvols/esx.sock",
            "DOCKVOLS_LOG_LEVEL=DEBUG")
    plugin_id = mdocker.out("plugin", "inspect", "-f", "{{.Id}}", NAME)
    plugin = ManagedPlugin(
        name=NAME, full_name=FULL_NAME, id=plugin_id,
        propagated_mount=mdir / "root" / "plugins" / plugin_id / "propagated-mount",
        # dockerd puts plugin sockets under /run/docker/plugins/<id>/ whatever its exec-root
        socket=Path("/run/docker/plugins") / plugin_id / "vsphere.sock",
        docker=mdocker)
    try:
        plugin.enable()
        try:
            wait_for(plugin.activate, 15, "the managed plugin to answer Plugin.Activate")
        except TimeoutError as exc:
            pytest.fail(f"{exc}; plugin log:\n{plugin_log(mdir, plugin_id)}")
        yield plugin
    finally:
        mdocker("rm", "-f", *mdocker.out("ps", "-aq").split(), check=False)
        mdocker("plugin", "disable", "-f", NAME, check=False)
        mdocker("plugin", "rm", "-f", NAME, check=False)


def managed_volumes(docker: Docker) -> list[str]:
    return docker.out("volume", "ls", "-q", "--filter", f"driver={FULL_NAME}").split()


@pytest.fixture
def mdv(mdocker: Docker, mbusybox: str, managed: ManagedPlugin, esx: Daemon,
        run_dir: Path) -> Iterator[Docker]:
    """The docker CLI of the second dockerd with the managed plugin enabled; afterwards every
    container and managed volume is removed and nothing may be left mounted or attached."""
    if not esx.running:
        esx.start()
    if not managed.enabled:
        managed.enable()
    wait_for(managed.activate, 15, "the managed plugin to answer")
    yield mdocker
    containers = mdocker.out("ps", "-aq").split()
    if containers:
        mdocker("rm", "-f", *containers)
    if not managed.enabled:
        managed.enable()
    for name in managed_volumes(mdocker):
        mdocker("volume", "rm", "-f", name, check=False)
    leaked_mounts = mounts_under(managed.propagated_mount)
    leaked_loops = loops_on(run_dir)
    assert not leaked_mounts, f"mounts leaked: {leaked_mounts}"
    assert not leaked_loops, f"loop devices leaked: {leaked_loops}"


def volume_mounted(plugin: ManagedPlugin, canonical: str) -> bool:
    path = str(plugin.propagated_mount / canonical)
    return path in mounts_under(plugin.propagated_mount)


def plugin_log(mdir: Path, plugin_id: str, lines: int = 60) -> str:
    """dockerd logs the plugin's stderr with plugin=<id>."""
    try:
        text = (mdir / "dockerd-managed.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no dockerd log)"
    return "\n".join([line for line in text.splitlines() if plugin_id in line][-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
