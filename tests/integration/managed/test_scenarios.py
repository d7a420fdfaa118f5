"""The Docker user's scenarios of tests/integration/test_docker_volumes.py, run unchanged
against the managed plugin in the second dockerd."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from .. import test_docker_volumes as scenarios
from ..conftest import Docker
from .conftest import ManagedPlugin

SCENARIOS: list[Callable[..., None]] = [
    fn for name, fn in vars(scenarios).items() if name.startswith("test_") and callable(fn)]


def test_scenarios_were_found() -> None:
    assert len(SCENARIOS) >= 10, [fn.__name__ for fn in SCENARIOS]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda fn: fn.__name__[len("test_"):])
def test_scenario(scenario: Callable[..., None], mdv: Docker, managed: ManagedPlugin,
                  datastore: Path, run_dir: Path) -> None:
    # mdv names the managed plugin's driver ("<name>:latest") for make_volume and filters
    given = {"dv": mdv, "mount_root": managed.propagated_mount, "datastore": datastore,
             "run_dir": run_dir}
    wanted = inspect.signature(scenario).parameters
    missing = [p for p in wanted if p not in given]
    assert not missing, f"{scenario.__name__} wants fixtures this suite lacks: {missing}"
    scenario(**{p: given[p] for p in wanted})
