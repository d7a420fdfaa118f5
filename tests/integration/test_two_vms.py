"""Two "VMs" (two plugins with different identities against one esx_service) racing for one
volume: exactly one wins, the other is told which VM holds it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.processes import Daemon

from .conftest import DRIVER, Docker, make_volume, mounts_under, plugin_daemon

DRIVER2 = f"{DRIVER}-vm2"


@pytest.fixture(scope="module")
def plugin2(run_dir: Path, esx: Daemon, docker: Docker) -> Iterator[Daemon]:
    daemon = plugin_daemon(run_dir, docker, DRIVER2, run_dir / "esx-vm2.sock",
                           run_dir / "mnt-vm2")
    daemon.start()
    yield daemon
    daemon.stop()


def start(dv: Docker, name: str, volume: str) -> tuple[int, str]:
    done = dv("run", "-d", "--name", name, "-v", f"{volume}:/data", "busybox", "sleep", "300",
              check=False)
    return done.returncode, done.stderr


def test_second_vm_is_refused_naming_the_holder(dv: Docker, plugin2: Daemon,
                                                run_dir: Path) -> None:
    make_volume(dv, "contested")
    dv("volume", "create", "-d", DRIVER2, "contested@datastore1")  # same disk, VM 2's view
    assert start(dv, "vm1-user", "contested")[0] == 0
    code, err = start(dv, "vm2-user", "contested@datastore1")
    assert code != 0
    assert "attached to VM test-vm" in err
    assert mounts_under(run_dir / "mnt-vm2") == []
    dv("rm", "-f", "vm1-user", "vm2-user")
    assert start(dv, "vm2-user2", "contested@datastore1")[0] == 0  # free now: VM 2 gets it
    dv("rm", "-f", "vm2-user2")
    dv("volume", "rm", "contested@datastore1")


def test_simultaneous_attach_has_exactly_one_winner(dv: Docker, plugin2: Daemon,
                                                    run_dir: Path, mount_root: Path) -> None:
    for round_no in range(3):
        volume = f"race{round_no}"
        make_volume(dv, volume)
        dv("volume", "create", "-d", DRIVER2, f"{volume}@datastore1")
        with ThreadPoolExecutor(2) as pool:
            one = pool.submit(start, dv, f"r{round_no}a", volume)
            two = pool.submit(start, dv, f"r{round_no}b", f"{volume}@datastore1")
            results = [one.result(), two.result()]
        winners = [r for r in results if r[0] == 0]
        losers = [r for r in results if r[0] != 0]
        assert len(winners) == 1, results
        assert "VolumeInUse" in losers[0][1] or "attached to VM" in losers[0][1]
        held = mounts_under(mount_root) + mounts_under(run_dir / "mnt-vm2")
        assert len(held) == 1
        dv("rm", "-f", f"r{round_no}a", f"r{round_no}b")
        dv("volume", "rm", f"{volume}@datastore1")
