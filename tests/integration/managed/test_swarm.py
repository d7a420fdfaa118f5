"""A swarm service on a dockvols volume keeps its data when its task is replaced
(single-node swarm on loopback; dockerd runs with --bridge=none --iptables=false)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import wait_for

from ..conftest import Docker
from .conftest import ManagedPlugin, free_port, volume_mounted

SERVICE = "stateful"
LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"


GWBRIDGE = Path("/sys/class/net/docker_gwbridge")  # a host-wide interface swarm makes


@pytest.fixture
def swarm(mdv: Docker) -> Iterator[Docker]:
    had_gwbridge = GWBRIDGE.exists()
    port = free_port()
    mdv("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr",
        f"127.0.0.1:{port}", "--data-path-addr", "127.0.0.1", timeout=60)
    try:
        yield mdv
    finally:
        mdv("service", "rm", SERVICE, check=False)
        wait_for(lambda: not task_containers(mdv), 30, "the service's containers to go")
        mdv("swarm", "leave", "--force", check=False, timeout=60)
        # swarm leave keeps docker_gwbridge; it would outlive this dockerd's data root
        mdv("network", "rm", "docker_gwbridge", check=False)
        if not had_gwbridge and GWBRIDGE.exists():
            subprocess.run(["ip", "link", "delete", "docker_gwbridge"], check=False)
            pytest.fail("docker_gwbridge was left behind by the swarm")


def task_containers(dv: Docker) -> list[str]:
    return dv.out("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={SERVICE}"
                  ).split()


def running_task(dv: Docker) -> str | None:
    ids = dv.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVICE}"
                 ).split()
    return ids[0] if len(ids) == 1 else None


def test_swarm_service_keeps_its_data_when_its_task_is_replaced(
        swarm: Docker, managed: ManagedPlugin) -> None:
    swarm("service", "create", "--detach", "--no-resolve-image", "--name", SERVICE,
          "--stop-grace-period", "5s", "--mount",
          f"type=volume,source=swdata,target=/data,volume-driver={managed.full_name},"
          "volume-opt=size=150mb", "busybox:latest", "sh", "-c", LOOP)
    wait_for(lambda: running_task(swarm) is not None, 60, "the service's task to run",
             interval=0.5)
    first = running_task(swarm)
    assert first
    swarm("exec", first, "sh", "-c", "echo precious > /data/keep && sync")
    assert swarm.inspect_volume("swdata")["Driver"] == managed.full_name
    assert volume_mounted(managed, "swdata@datastore1")

    swarm("service", "update", "--detach", "--force", SERVICE)
    wait_for(lambda: running_task(swarm) not in (None, first), 60,
             "a new task to replace the first", interval=0.5)
    second = running_task(swarm)
    assert second and second != first
    assert swarm.out("exec", second, "cat", "/data/keep") == "precious"
    assert volume_mounted(managed, "swdata@datastore1")

    swarm("service", "rm", SERVICE)
    wait_for(lambda: not task_containers(swarm), 30, "the service's containers to go")
    wait_for(lambda: not volume_mounted(managed, "swdata@datastore1"), 15,
             "the volume to be unmounted once the service is gone")
