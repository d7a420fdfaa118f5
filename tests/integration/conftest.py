"""Fixtures for the real-parts suite: a private dockerd (--bridge=none --iptables=false, its
own data root), a busybox image made with `docker import`, esx_service on the local backend
and the plugin registered as the legacy driver `vsphere`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import (
    REPO,
    Daemon,
    answers_activate,
    python_daemon,
    remove_dead_socket,
    wait_for,
)
from dockvols_common.loop_table import loop_table
from dockvols_common.mountinfo import mounts_under as read_mounts_under
from esx_service.backends.trash import TRASH

# Another name lets two suites (or `make run`) share a host: legacy sockets are host-wide.
DRIVER = os.environ.get("DOCKVOLS_TEST_DRIVER", "vsphere")
TRASH_FOLDER = os.path.basename(TRASH)  # removed extents, freed after the answer
PLUGIN_SOCKET = f"/run/docker/plugins/{DRIVER}.sock"
RECONCILE_PERIOD = 2.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the integration suite needs root (dockerd, loop devices, mount); "
                    "run it through `make test` as root")
    path = Path(tempfile.mkdtemp(prefix="dv-", dir="/tmp"))  # short: unix socket paths
    yield path
    keep = Path(os.environ.get("DOCKVOLS_TEST_LOGS", "/tmp/dockvols-test-logs"))
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for log in [*path.glob("*.log"), *path.glob("*.png")]:
        shutil.copy(log, keep / log.name)  # for a post-mortem of the last run (and screenshots)
    # A failed test may have left mounts or loop devices (its teardown said so): release
    # them, or they outlive the files they point at.
    for target in reversed(all_mounts_under(path)):
        subprocess.run(["umount", "-l", target], check=False)
    for line in loops_on(path):
        subprocess.run(["losetup", "-d", line.split()[0]], check=False)
    shutil.rmtree(path, ignore_errors=True)


class Docker:
    """The docker CLI against the suite's private dockerd."""

    def __init__(self, host: str, driver: str = DRIVER) -> None:
        self.env = {**os.environ, "DOCKER_HOST": host}
        self.host = host
        self.driver = driver  # as dockerd reports it: a managed plugin's is "<name>:latest"

    def __call__(self, *args: str, check: bool = True, timeout: float = 180,
                 input: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def out(self, *args: str) -> str:
        return self(*args).stdout.strip()

    def inspect_volume(self, name: str) -> dict:
        return json.loads(self.out("volume", "inspect", name))[0]


def start_private_dockerd(name: str, state: Path, exec_root: Path,
                          data_root: Path) -> tuple[Daemon, Docker]:
    """A dockerd of the suite's own (no bridge, no iptables), answering on state/docker.sock."""
    sock = state / "docker.sock"
    daemon = Daemon(name, [
        "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
        f"--data-root={data_root}", f"--exec-root={exec_root}",
        f"--pidfile={state / 'docker.pid'}", f"--host=unix://{sock}",
    ], {}, state / f"{name}.log", str(sock))
    daemon.start()
    docker = Docker(f"unix://{sock}")
    wait_for(lambda: docker("version", check=False).returncode == 0, 60, f"{name} to answer")
    return daemon, docker


@pytest.fixture(scope="session")
def dockerd(run_dir: Path) -> Iterator[Daemon]:
    for stale in Path("/run/docker/plugins").glob("*.sock"):
        remove_dead_socket(str(stale))
    daemon, docker = start_private_dockerd("dockerd", run_dir, run_dir / "docker-exec",
                                           run_dir / "docker-root")
    yield daemon
    docker("rm", "-f", *docker.out("ps", "-aq").split(), check=False)
    daemon.stop()


@pytest.fixture(scope="session")
def docker(dockerd: Daemon, run_dir: Path) -> Docker:
    return Docker(f"unix://{run_dir / 'docker.sock'}")


def import_busybox(docker: Docker) -> str:
    """A busybox image from Debian's busybox-static (no registry), in that dockerd."""
    subprocess.run([str(REPO / "scripts" / "busybox-image.sh"), "busybox:latest"],
                   env=docker.env, check=True, capture_output=True)
    return "busybox:latest"


@pytest.fixture(scope="session")
def busybox(docker: Docker) -> str:
    return import_busybox(docker)


@pytest.fixture(scope="session")
def datastore(run_dir: Path) -> Path:
    return run_dir / "datastores" / "datastore1"


@pytest.fixture(scope="session")
def esx(run_dir: Path, datastore: Path) -> Iterator[Daemon]:
    sock = str(run_dir / "esx.sock")
    daemon = python_daemon("esx_service", "esx_service", {
        "DOCKVOLS_SOCKET": sock,
        "DOCKVOLS_DATA_DIR": str(run_dir / "data"),
        # a third with the space and mixed case ESX datastores often have (vDVS users')
        "DOCKVOLS_DATASTORES": f"datastore1={datastore},datastore2={run_dir / 'ds2'},"
                               f"My Data Store={run_dir / 'ds3'}",
        "DOCKVOLS_DEFAULT_DATASTORE": "datastore1",
        "DOCKVOLS_VM_NAME": "test-vm",
        "DOCKVOLS_EXTRA_VM_SOCKETS": f"{run_dir / 'esx-vm2.sock'}=test-vm2",
        "DOCKVOLS_ADMIN_SOCKET": str(run_dir / "admin.sock"),
        "DOCKVOLS_DB": str(run_dir / "dockvols.db"),
        "DOCKVOLS_LOG_LEVEL": "DEBUG",
        "DOCKVOLS_CONFIG": "",
    }, run_dir / "esx_service.log", sock)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def mount_root(run_dir: Path) -> Path:
    return run_dir / "mnt"


def plugin_daemon(run_dir: Path, docker: Docker, driver: str, esx_socket: Path,
                  mount_root: Path) -> Daemon:
    """A legacy plugin process registered with dockerd as ``driver``."""
    socket_path = f"/run/docker/plugins/{driver}.sock"
    if answers_activate(socket_path):
        pytest.fail(f"another plugin already serves {socket_path}; stop it (make run?) "
                    "or set DOCKVOLS_TEST_DRIVER to another name")
    return python_daemon(f"plugin-{driver}", "plugin", {
        "DOCKVOLS_DRIVER_NAME": driver,
        "DOCKVOLS_ESX_ADDRESS": f"unix://{esx_socket}",
        "DOCKVOLS_MOUNT_ROOT": str(mount_root),
        "DOCKVOLS_STATE_DIR": str(run_dir / f"state-{driver}"),
        "DOCKER_HOST": docker.host,
        "DOCKVOLS_LOG_LEVEL": "DEBUG",
        # bounded waits, so a stuck esx_service shows up as an error within the test
        "DOCKVOLS_ESX_TIMEOUT": "15",
        "DOCKVOLS_QUERY_TIMEOUT": "3",
        # a short reconcile, so a leak must be gone within seconds of a test's end
        "DOCKVOLS_RECONCILE_PERIOD": str(RECONCILE_PERIOD),
    }, run_dir / f"plugin-{driver}.log", socket_path)


@pytest.fixture(scope="session")
def plugin(run_dir: Path, esx: Daemon, docker: Docker, mount_root: Path) -> Iterator[Daemon]:
    daemon = plugin_daemon(run_dir, docker, DRIVER, run_dir / "esx.sock", mount_root)
    daemon.start()
    yield daemon
    daemon.stop()


def restart_plugin_and_wait_for_recovery(plugin: Daemon, extra_env: dict | None = None) -> None:
    plugin.stop()
    marker_count = plugin.log_path.read_text(errors="replace").count("recovery done")
    plugin.start(extra_env)
    wait_for(lambda: plugin.log_path.read_text(errors="replace").count("recovery done")
             > marker_count, 60, "plugin recovery to finish")


def all_mounts_under(root: Path) -> list[str]:
    """Every mount point under ``root``, shadowed ones included (for cleaning up)."""
    return [m.point for m in read_mounts_under(str(root))]


def mounts_under(root: Path) -> list[str]:
    """Mount points under ``root``, each as often as it is mounted on top of itself.

    dockerd makes its data root a shared mount, so a mount a managed plugin makes under its
    /mnt/vmdk reaches the host twice at the same path (on the propagated mount, and on the
    data root's peer): copies side by side count once. A volume mounted twice by the plugin
    is stacked (the second's parent is the first) and counts twice."""
    by_path: dict[str, set[str]] = {}
    parents: dict[str, str] = {}
    for m in read_mounts_under(str(root)):
        by_path.setdefault(m.point, set()).add(m.mount_id)
        parents[m.mount_id] = m.parent_id
    result = []
    for path, ids in sorted(by_path.items()):
        stacked = sum(1 for i in ids if parents[i] in ids)
        result += [path] * (stacked + 1)
    return result


def layout_files(datastore: Path) -> list[Path]:
    """Every file of dockvols' layout on ``datastore``, but for the trash (what is there was
    removed, and is being freed after the answer: esx_service/backends/trash.py).

    os.walk, not Path.rglob: a lease's staging folder may go between listing its parent and
    reading it (the keeper releases it a moment after the operation), and rglob raises on that
    where os.walk passes over it."""
    return sorted(Path(folder) / name
                  for folder, subfolders, names in os.walk(datastore / "dockvols")
                  if TRASH_FOLDER not in Path(folder).parts for name in names)


def loops_on(root: Path) -> list[str]:
    """``<device> <backing file>`` of each loop device bound to a file under ``root``."""
    return [f"{dev} {backing}" for dev, backing in loop_table() if str(root) in backing]


@pytest.fixture
def dv(docker: Docker, busybox: str, plugin: Daemon, esx: Daemon, mount_root: Path,
       run_dir: Path) -> Iterator[Docker]:
    """The docker CLI with dockvols up; afterwards every container and volume is removed and
    nothing may be left mounted or attached."""
    for daemon in (esx, plugin):
        if not daemon.running:
            daemon.start()
    # a sibling plugin an earlier test killed -9 left its socket: dockerd would retry it for
    # up to 15 s in every `volume ls` (ours only: other suites' sockets are theirs)
    for stale in Path("/run/docker/plugins").glob(f"{DRIVER}*.sock"):
        remove_dead_socket(str(stale))
    yield docker
    containers = docker.out("ps", "-aq").split()
    if containers:
        docker("rm", "-f", *containers)
    # one name a line: vDVS-style names may hold spaces
    for name in docker.out("volume", "ls", "-q", "--filter", f"driver={DRIVER}").splitlines():
        docker("volume", "rm", "-f", name, check=False)
    leaked_mounts = mounts_under(mount_root)
    leaked_loops = loops_on(run_dir)
    assert not leaked_mounts, f"mounts leaked: {leaked_mounts}"
    assert not leaked_loops, f"loop devices leaked: {leaked_loops}"


def make_volume(dv: Docker, name: str, *opts: str) -> None:
    args = ["volume", "create", "-d", dv.driver]
    for opt in opts:
        args += ["-o", opt]
    dv(*args, name)
