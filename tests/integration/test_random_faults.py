"""The seeded randomized fault test (chaos.py): a few rounds in `make test`; `make soak`
sets DOCKVOLS_CHAOS_KILLS (e.g. 400) and prints the figures. DOCKVOLS_CHAOS_SEED replays
a run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.processes import Daemon

from .chaos import Chaos
from .conftest import RECONCILE_PERIOD, Docker

KILLS = int(os.environ.get("DOCKVOLS_CHAOS_KILLS", "12"))
PER_ROUND = int(os.environ.get("DOCKVOLS_CHAOS_KILLS_PER_ROUND", "3"))


# a few minutes in `make test` (more on a loaded machine); `make soak` runs as long as it takes
@pytest.mark.timeout(900 if KILLS <= 12 else 0)
def test_random_kills_during_bursts_lose_nothing_and_leak_nothing(
        dv: Docker, esx: Daemon, plugin: Daemon, run_dir: Path, mount_root: Path,
        datastore: Path) -> None:
    seed = int(os.environ.get("DOCKVOLS_CHAOS_SEED") or time.time_ns() % 1_000_000)
    chaos = Chaos(dv, esx, plugin, run_dir, mount_root, datastore, seed, RECONCILE_PERIOD,
                  kills_per_round=PER_ROUND)
    print(f"\nchaos seed={seed} (replay: DOCKVOLS_CHAOS_SEED={seed})")
    started = time.monotonic()
    while chaos.figures.total_kills < KILLS:
        chaos.round()
        if chaos.figures.rounds % 10 == 0 or chaos.figures.problems():
            print(f"  after {time.monotonic() - started:.0f}s: {chaos.figures.summary()}",
                  flush=True)
        if chaos.figures.problems():
            break
    chaos.scan_logs()
    print(f"chaos seed={seed} {time.monotonic() - started:.0f}s: {chaos.figures.summary()}")
    assert not chaos.figures.problems(), (
        f"seed {seed}: {chaos.figures.summary()}\n" + "\n".join(chaos.figures.problems()[:30]))
