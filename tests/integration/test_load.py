"""Many containers at once: distinct volumes in parallel, and many sharing one volume. Zero
errors, zero leaks, every byte read back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .conftest import DRIVER, Docker, loops_on, make_volume, mounts_under

N_VOLUMES = 32
PARALLEL = 16
N_SHARERS = 12


def lifecycle(dv: Docker, i: int) -> str:
    name = f"load{i}"
    dv("volume", "create", "-d", DRIVER, "-o", "size=64mb", name)
    dv("run", "--rm", "-v", f"{name}:/data", "busybox", "sh", "-c",
       f"echo payload-{i} > /data/f && sync")
    got = dv.out("run", "--rm", "-v", f"{name}:/data", "busybox", "cat", "/data/f")
    dv("volume", "rm", name)
    return got


def test_many_volumes_in_parallel_lose_nothing(dv: Docker, mount_root: Path,
                                               run_dir: Path) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda i: lifecycle(dv, i), range(N_VOLUMES)))
    assert results == [f"payload-{i}" for i in range(N_VOLUMES)]
    assert mounts_under(mount_root) == []
    assert loops_on(run_dir) == []
    assert not [n for n in dv.out("volume", "ls", "-q").split() if n.startswith("load")]


def test_many_containers_share_one_volume(dv: Docker, mount_root: Path) -> None:
    make_volume(dv, "crowd")

    def writer(i: int) -> int:
        return dv("run", "--rm", "-v", "crowd:/data", "busybox", "sh", "-c",
                  f"echo {i} > /data/w{i}", check=False).returncode

    with ThreadPoolExecutor(N_SHARERS) as pool:
        codes = list(pool.map(writer, range(N_SHARERS)))
    assert codes == [0] * N_SHARERS
    listing = dv.out("run", "--rm", "-v", "crowd:/data", "busybox", "ls", "/data")
    assert {f"w{i}" for i in range(N_SHARERS)} <= set(listing.split())
    assert mounts_under(mount_root) == []
