"""Several esx_service processes on one datastore directory, as several ESXi hosts sharing a
datastore: each with its own sockets, data dir, host id and VM identity, all with one
datastore and (for quotas) one admin DB. Races fire every host's request at the same moment
(a barrier) and each round is checked against the invariants of issue 11. Shared by
tests/integration/test_multi_host.py and the soak (tests/integration/soak_multi_host.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Daemon, python_daemon
from dockvols_common.loop_table import DELETED, loop_table, loops_under
from plugin.errors import ServiceError, ServiceUnreachable
from plugin.esx_client import HttpEsxClient

LEASE_SECONDS = 3.0  # short, so kill tests wait little; production default 15 s
TEAM_LIMIT_MB = 30


@dataclass
class Host:
    index: int
    vm: str
    daemon: Daemon
    client: HttpEsxClient  # as VM vm-<i>, in vmgroup _DEFAULT
    team: HttpEsxClient    # as VM team-<i>, in vmgroup team (quota races)
    admin: HttpEsxClient

    @staticmethod
    def outcome(call: Callable[[], object]) -> tuple[str, object]:
        """("ok", answer), or (error code, message) as the wire said."""
        try:
            return "ok", call()
        except ServiceError as exc:
            return exc.code, exc.message
        except ServiceUnreachable as exc:
            return "Unreachable", str(exc)


@dataclass
class Figures:
    rounds: Counter = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    def line(self) -> str:
        return (f"rounds {dict(self.rounds)}, broken {len(self.broken)}, outcomes "
                f"{dict(sorted(self.outcomes.items()))}")


def esx_env(run_dir: Path, i: int, datastore: Path, db: Path) -> dict[str, str]:
    return {
        "DOCKVOLS_SOCKET": str(run_dir / f"mh{i}.sock"),
        "DOCKVOLS_ADMIN_SOCKET": str(run_dir / f"mh{i}-admin.sock"),
        "DOCKVOLS_DATA_DIR": str(run_dir / f"mh{i}-data"),
        "DOCKVOLS_DATASTORES": f"datastore1={datastore}",
        "DOCKVOLS_VM_NAME": f"vm-{i}",
        "DOCKVOLS_EXTRA_VM_SOCKETS": f"{run_dir / f'mh{i}-team.sock'}=team-{i}",
        "DOCKVOLS_HOST_ID": f"host-{i}",
        "DOCKVOLS_DB": str(db),
        "DOCKVOLS_LEASE_SECONDS": str(LEASE_SECONDS),
        "DOCKVOLS_LEASE_WAIT_SECONDS": "60",
        "DOCKVOLS_LOG_LEVEL": "INFO",
        "DOCKVOLS_CONFIG": "",
    }


class Cluster:
    def __init__(self, run_dir: Path, count: int, prefix: str = "mh",
                 wrap: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.datastore = run_dir / f"{prefix}-datastore"
        self.db = run_dir / f"{prefix}-shared.db"
        self.hosts: list[Host] = []
        self.team = False  # whether the team-<i> VMs were put in vmgroup "team"
        for i in range(count):
            host_env = {**esx_env(run_dir, i, self.datastore, self.db), **(env or {})}
            host_env["DOCKVOLS_SOCKET"] = str(run_dir / f"{prefix}{i}.sock")
            host_env["DOCKVOLS_ADMIN_SOCKET"] = str(run_dir / f"{prefix}{i}-admin.sock")
            team_sock = run_dir / f"{prefix}{i}-team.sock"
            host_env["DOCKVOLS_EXTRA_VM_SOCKETS"] = f"{team_sock}=team-{i}"
            daemon = python_daemon(f"esx_service-{prefix}{i}", "esx_service", host_env,
                                   run_dir / f"{prefix}{i}.log", host_env["DOCKVOLS_SOCKET"])
            if wrap:  # e.g. each in a PID namespace of its own
                daemon.argv = [*wrap, *daemon.argv]
            self.hosts.append(Host(
                i, host_env["DOCKVOLS_VM_NAME"], daemon,
                HttpEsxClient(f"unix://{host_env['DOCKVOLS_SOCKET']}", timeout=120),
                HttpEsxClient(f"unix://{team_sock}", timeout=120),
                HttpEsxClient(f"unix://{host_env['DOCKVOLS_ADMIN_SOCKET']}", timeout=60)))

    def start(self) -> None:
        for host in self.hosts:
            host.daemon.start()

    def stop(self) -> None:
        for host in self.hosts:
            host.daemon.stop()
        # A round that failed between attach and detach leaves its loop device: release it
        # here, or every later test's leak check in this session fails on it.
        for device in loops_under(str(self.datastore)):
            subprocess.run(["losetup", "--detach", device], check=False)

    @property
    def folder(self) -> Path:
        return self.datastore / "dockvols" / "_DEFAULT"


def at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls in threads released by one barrier; their outcomes in order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


def loops_on(path: Path) -> list[str]:
    """Loop devices bound to ``path`` (or to a deleted file of that name), from sysfs."""
    return [dev for dev, backing in loop_table()
            if backing.removesuffix(DELETED) == str(path)]


def datastore_problems(cluster: Cluster, hosts: list[Host]) -> list[str]:
    """Every metadata file parses and has its disk files; an attached volume has exactly its
    one loop device and a detached one none; no temp file or taken-over lease lingers; and
    every host lists exactly the visible volumes of the caller's vmgroup."""
    problems = []
    visible: dict[str, set[str]] = {"_DEFAULT": set(), "team": set()}
    for group in sorted((cluster.datastore / "dockvols").iterdir()):
        if not group.is_dir():
            continue
        for path in sorted(group.iterdir()):
            if path.name.endswith(".json") and not path.name.startswith("."):
                problems += _metadata_problems(group, path, visible.setdefault(group.name, set()))
            elif ".tmp-" in path.name:
                problems.append(f"temp file {path.name} left behind")
            elif path.name.startswith(".lease-") and any(
                    e.startswith(".dead-") for e in os.listdir(path)):
                problems.append(f"a taken-over lease left in {path.name}")
    for host in hosts:
        clients = [(host.client, "_DEFAULT")] + ([(host.team, "team")] if cluster.team else [])
        for client, group in clients:
            listed = host.outcome(lambda c=client: sorted(v["name"] for v in c.list()))[1]
            if listed != sorted(visible[group]):
                problems.append(f"host {host.index} lists {listed} in {group}, the datastore "
                                f"has {sorted(visible[group])}")
    return problems


def _metadata_problems(group: Path, path: Path, visible: set[str]) -> list[str]:
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        return [f"{path} does not parse: {exc}"]
    if meta.get("status") not in ("detached", "attached"):
        return [f"{path.name} left {meta.get('status')}"]
    problems = []
    visible.add(f"{meta['name']}@{meta['datastore']}")
    for suffix in (".vmdk", "-flat.vmdk"):
        if not (group / f"{meta['name']}{suffix}").exists():
            problems.append(f"{meta['name']} has no {suffix} file")
    device = (meta.get("attach_info") or {}).get("device")
    bound = loops_on(group / f"{meta['name']}-flat.vmdk")
    if meta["status"] == "attached" and bound != [device]:
        problems.append(f"{meta['name']} attached as {device}, but bound as {bound}")
    if meta["status"] == "detached" and bound:
        problems.append(f"{meta['name']} detached, but bound as {bound}")
    return problems


def kill9(host: Host) -> None:
    host.daemon.stop(signal.SIGKILL)
