"""A compose service on a dockvols volume keeps its data across `down` and `up`."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import Docker
from .conftest import ManagedPlugin, volume_mounted

COMPOSE_FILE = Path(__file__).parent / "compose" / "docker-compose.yml"
PROJECT = "dvm"


@functools.cache
def compose_command() -> tuple[str, ...]:
    """Debian 12's docker-compose is v1, a program of its own; Debian 13's is v2, which
    may come as the Docker CLI's plugin only (`docker compose`). Found once per run."""
    binary = shutil.which("docker-compose")
    if binary is not None:
        return (binary,)
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True,
                            text=True, timeout=30, check=False)
    if plugin.returncode == 0:
        return ("docker", "compose")
    pytest.fail("neither docker-compose nor `docker compose` runs (Debian package "
                "docker-compose); scripts/install-deps.sh should install it")


def compose(dv: Docker, driver: str, *args: str) -> str:
    command = compose_command()
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "-p", PROJECT, *args],
                          env={**dv.env, "DOCKVOLS_DRIVER": driver}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(command)} {' '.join(args)}:\n{done.stdout}" \
                                 f"{done.stderr}"
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
        subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "-p", PROJECT,
                        "down", "-v", "-t", "2"], env=mdv.env, capture_output=True,
                       timeout=180, check=False)
    assert volume not in mdv.out("volume", "ls", "-q").split()
