"""Many containers at once: distinct volumes in parallel, and many sharing one volume. Zero
errors, zero leaks, every byte read back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .conftest import DRIVER, Docker, loops_on, make_volume, mounts_under

PARALLEL = 16
# 16 clients x 6 lifecycles: 192 Mount/Unmount pairs, enough that the ~1% of Unmounts that
# once failed under this load (ENODEV from a loop device's sysfs mid-teardown) show up
N_VOLUMES = PARALLEL * 6
N_SHARERS = 12


def lifecycle(dv: Docker, i: int) -> tuple[str, list[str]]:
    """Create, write+sync, read back, remove; every step's error, not just the first."""
    name = f"load{i}"
    steps = [("volume", "create", "-d", DRIVER, "-o", "size=64mb", name),
             ("run", "--rm", "-v", f"{name}:/data", "busybox", "sh", "-c",
              f"echo payload-{i} > /data/f && sync"),
             ("run", "--rm", "-v", f"{name}:/data", "busybox", "cat", "/data/f"),
             ("volume", "rm", name)]
    errors, got = [], ""
    for step in steps:
        done = dv(*step, check=False)
        if done.returncode:
            errors.append(f"{' '.join(step[:2])} {name}: {done.stderr.strip()[:300]}")
        if step[-1] == "/data/f":
            got = done.stdout.strip()
    return got, errors


def test_16_clients_of_whole_lifecycles_get_zero_errors(dv: Docker, mount_root: Path,
                                                        run_dir: Path) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda i: lifecycle(dv, i), range(N_VOLUMES)))
    errors = [e for _, errs in results for e in errs]
    assert errors == [], f"{len(errors)} errors in {N_VOLUMES * 4} steps:\n" + "\n".join(
        errors[:20])
    assert [got for got, _ in results] == [f"payload-{i}" for i in range(N_VOLUMES)]
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
