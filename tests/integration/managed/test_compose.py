"""A compose service on a dockvols volume keeps its data across `down` and `up`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import Docker
from .conftest import ManagedPlugin, volume_mounted

COMPOSE_FILE = Path(__file__).parent / "compose" / "docker-compose.yml"
PROJECT = "dvm"


def compose(dv: Docker, driver: str, *args: str) -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose (v1, Debian package docker-compose) is not installed; "
                    "scripts/install-deps.sh should install it")
    done = subprocess.run([binary, "-f", str(COMPOSE_FILE), "-p", PROJECT, *args],
                          env={**dv.env, "DOCKVOLS_DRIVER": driver}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout.strip()


def test_compose_service_keeps_its_data_across_down_and_up(
        mdv: Docker, managed: ManagedPlugin) -> None:
    volume = f"{PROJECT}_dbdata"
    try:
        compose(mdv, managed.full_name, "up", "-d")
        info = mdv.inspect_volume(volume)
        assert info["Driver"] == managed.full_name
        assert info["Status"]["capacity"]["size"] == "200mb"
        assert volume_mounted(managed, f"{volume}@datastore1")
        container = compose(mdv, managed.full_name, "ps", "-q", "db")
        mdv("exec", container, "sh", "-c", "echo precious > /data/keep && sync")

        compose(mdv, managed.full_name, "down")  # containers gone, volume kept
        assert volume in mdv.out("volume", "ls", "-q").split()
        assert not volume_mounted(managed, f"{volume}@datastore1")

        compose(mdv, managed.full_name, "up", "-d")
        container = compose(mdv, managed.full_name, "ps", "-q", "db")
        assert mdv.out("exec", container, "cat", "/data/keep") == "precious"
        assert len(mdv.out("exec", container, "cat", "/data/starts").splitlines()) == 2
    finally:
        subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, "down", "-v",
                        "-t", "2"], env=mdv.env, capture_output=True, timeout=180, check=False)
    assert volume not in mdv.out("volume", "ls", "-q").split()
